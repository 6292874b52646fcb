/* SPDX-License-Identifier: MIT */
/*
 * Peer authentication by a shared secret: CPace (a balanced
 * password-authenticated key exchange) over ristretto255, from libsodium's
 * primitives. Each side sends share = y * G, where the generator G is
 * hashed from the secret and y is a fresh random scalar; both derive the
 * session key from y * (peer's share) and the two shares. A share reveals
 * nothing an offline guess of the secret could be checked against, and a
 * key-confirmation MAC only tells its receiver whether the one guess it
 * put into its own share was right: an attacker gets one guess per
 * handshake, which the listener's backoff then slows (see ep.c).
 */
#ifndef KVW_AUTH_H
#define KVW_AUTH_H

#include "kvwire/kvwire.h"
#include <stdint.h>

#define KVW_AUTH_BYTES 32

/* Fresh scalar and share for secret. KVW_ERR_IO only if the group code fails. */
kvw_status kvw_auth_start(const char *secret, uint8_t scalar[KVW_AUTH_BYTES],
			  uint8_t share[KVW_AUTH_BYTES]);
/* Session key from our scalar, the peer's share and both shares in
 * (client, server) order. KVW_ERR_AUTH when the peer's share is not a valid
 * group element or yields the identity. */
kvw_status kvw_auth_finish(const uint8_t scalar[KVW_AUTH_BYTES], const uint8_t peer[KVW_AUTH_BYTES],
			   const uint8_t client_share[KVW_AUTH_BYTES],
			   const uint8_t server_share[KVW_AUTH_BYTES], uint8_t key[KVW_AUTH_BYTES]);
/* mac = HMAC-SHA512/256(key, label | a | b), a and b 32 bytes each. */
void kvw_auth_mac(const uint8_t key[KVW_AUTH_BYTES], const char *label, const uint8_t *a,
		  const uint8_t *b, uint8_t mac[KVW_AUTH_BYTES]);

#endif
