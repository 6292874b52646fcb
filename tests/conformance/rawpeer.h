/* SPDX-License-Identifier: MIT */
/* A hand-written peer that speaks wire v1 over a raw stream socket (tcp or
 * the shm driver's unix socket), to send what an honest kvwire never
 * would: forged descriptors, bad magic, wrong versions, garbage. */
#ifndef RAWPEER_H
#define RAWPEER_H

#include "kvwire/kvwire.h"
#include "wire.h"
#include <stddef.h>
#include <stdint.h>

/* Connects a stream socket to the listener at uri (tcp:// or shm://). */
int rawp_connect(const char *uri);
int rawp_send(int fd, const void *buf, size_t len);
/* Sends a whole frame with pass_fd attached to its first byte (SCM_RIGHTS). */
int rawp_send_fd(int fd, const void *buf, size_t len, int pass_fd);
int rawp_frame(int fd, unsigned type, uint32_t ep_id, const void *body, size_t len);
/* >= 0: the minor version rawp_frame puts in HELLO headers (an older peer). */
extern int rawp_hello_minor;
/* Receives one frame, driving ctx meanwhile. Returns 1 (frame), 0 (EOF or
 * reset), -1 (timeout or a header that does not parse). */
int rawp_recv(int fd, kvw_ctx *ctx, int timeout_ms, struct kvw_wire_hdr *h, void *body,
	      size_t cap);
/* Waits for the server to close the connection, ignoring frames except
 * REJECT whose status lands in *reject (0 if none). 1 = closed, -1 = not. */
int rawp_wait_closed(int fd, kvw_ctx *ctx, int timeout_ms, int32_t *reject);
/* HELLO / WELCOME / AUTH / READY without a secret. Returns the server's
 * endpoint id, 0 on failure. */
uint32_t rawp_handshake(int fd, kvw_ctx *ctx, const char *driver);
/* The same; a REJECT received in place of WELCOME or READY leaves its
 * status in *reject (0 if none). */
uint32_t rawp_handshake_rej(int fd, kvw_ctx *ctx, const char *driver, int32_t *reject);

#endif
