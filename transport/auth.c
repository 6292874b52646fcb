/* SPDX-License-Identifier: MIT */
/* CPace over ristretto255 (see auth.h). */
#include "auth.h"

#include <sodium.h>
#include <string.h>

_Static_assert(crypto_core_ristretto255_BYTES == KVW_AUTH_BYTES, "ristretto255 element size");
_Static_assert(crypto_core_ristretto255_SCALARBYTES == KVW_AUTH_BYTES, "ristretto255 scalar size");

static const char kvw_auth_dsi[] = "kvwire-CPace-ristretto255-v1";

/* G = ristretto255 element hashed from (domain label, secret) */
static void kvw_auth_generator(const char *secret, uint8_t g[KVW_AUTH_BYTES])
{
	uint8_t h[crypto_core_ristretto255_HASHBYTES];
	crypto_generichash_state s;
	uint8_t n = (uint8_t)strlen(kvw_auth_dsi);

	crypto_generichash_init(&s, NULL, 0, sizeof(h));
	crypto_generichash_update(&s, &n, 1);
	crypto_generichash_update(&s, (const uint8_t *)kvw_auth_dsi, n);
	crypto_generichash_update(&s, (const uint8_t *)secret, strlen(secret));
	crypto_generichash_final(&s, h, sizeof(h));
	crypto_core_ristretto255_from_hash(g, h);
	sodium_memzero(h, sizeof(h));
}

kvw_status kvw_auth_start(const char *secret, uint8_t scalar[KVW_AUTH_BYTES],
			  uint8_t share[KVW_AUTH_BYTES])
{
	uint8_t g[KVW_AUTH_BYTES];
	int rc;

	kvw_auth_generator(secret, g);
	crypto_core_ristretto255_scalar_random(scalar);
	rc = crypto_scalarmult_ristretto255(share, scalar, g);
	sodium_memzero(g, sizeof(g));
	return rc == 0 ? KVW_OK : KVW_ERR_IO;
}

kvw_status kvw_auth_finish(const uint8_t scalar[KVW_AUTH_BYTES], const uint8_t peer[KVW_AUTH_BYTES],
			   const uint8_t client_share[KVW_AUTH_BYTES],
			   const uint8_t server_share[KVW_AUTH_BYTES], uint8_t key[KVW_AUTH_BYTES])
{
	uint8_t k[KVW_AUTH_BYTES];
	crypto_generichash_state s;

	if (!crypto_core_ristretto255_is_valid_point(peer) ||
	    crypto_scalarmult_ristretto255(k, scalar, peer) != 0)
		return KVW_ERR_AUTH;
	crypto_generichash_init(&s, NULL, 0, KVW_AUTH_BYTES);
	crypto_generichash_update(&s, (const uint8_t *)"kvw-ISK", 7);
	crypto_generichash_update(&s, k, sizeof(k));
	crypto_generichash_update(&s, client_share, KVW_AUTH_BYTES);
	crypto_generichash_update(&s, server_share, KVW_AUTH_BYTES);
	crypto_generichash_final(&s, key, KVW_AUTH_BYTES);
	sodium_memzero(k, sizeof(k));
	return KVW_OK;
}

void kvw_auth_mac(const uint8_t key[KVW_AUTH_BYTES], const char *label, const uint8_t *a,
		  const uint8_t *b, uint8_t mac[KVW_AUTH_BYTES])
{
	crypto_auth_hmacsha512256_state s;

	crypto_auth_hmacsha512256_init(&s, key, KVW_AUTH_BYTES);
	crypto_auth_hmacsha512256_update(&s, (const uint8_t *)label, strlen(label));
	crypto_auth_hmacsha512256_update(&s, a, KVW_AUTH_BYTES);
	crypto_auth_hmacsha512256_update(&s, b, KVW_AUTH_BYTES);
	crypto_auth_hmacsha512256_final(&s, mac);
}
