/* SPDX-License-Identifier: MIT */
/* libFuzzer: the handshake state machine, from both sides, with a secret.
 * The input is a script of steps. data[0] & 1 picks the role the fuzzer
 * plays: 0 = a client against a real listener, 1 = a server in front of a
 * real kvw_connect_start client. data[0] & 2 tells whether the fuzzer
 * "knows" the shared secret: then its CPace shares and key confirmations
 * are the real ones (to reach the states after the proof); otherwise they
 * are made from a wrong secret or are raw input bytes. Invariants: no
 * crash, no leak, and without the secret the library never ends a
 * handshake READY (the listener accepts nothing, the client never gets
 * KVW_OK). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "kvw_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_SECRET "fuzz-secret"
static kvw_ctx *fz_srv, *fz_cli;
static kvw_listener *fz_l;
static struct sockaddr_in fz_laddr, fz_raddr;
static int fz_rawl = -1;

static kvw_ctx *fz_ctx_new(void)
{
	kvw_config *cfg;
	kvw_ctx *c;

	if (kvw_config_create(&cfg) || kvw_config_set(cfg, "log_level", "0") ||
	    kvw_config_set(cfg, "secret", FZ_SECRET) || kvw_config_set(cfg, "connect_timeout_ms", "100") ||
	    kvw_config_set(cfg, "handshake_timeout_ms", "100") || kvw_ctx_create(cfg, &c))
		abort();
	kvw_config_destroy(cfg);
	return c;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct kvw_uri u;
	socklen_t al = sizeof(fz_raddr);

	(void)argc;
	(void)argv;
	fz_srv = fz_ctx_new();
	fz_cli = fz_ctx_new();
	if (kvw_listen(fz_srv, "tcp://127.0.0.1:0", &fz_l) != KVW_OK ||
	    kvw_uri_parse(kvw_listener_uri(fz_l), &u) != KVW_OK)
		abort();
	fz_laddr = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)u.port)};
	inet_pton(AF_INET, "127.0.0.1", &fz_laddr.sin_addr);
	fz_raddr = (struct sockaddr_in){.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.1", &fz_raddr.sin_addr);
	fz_rawl = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (bind(fz_rawl, (struct sockaddr *)&fz_raddr, sizeof(fz_raddr)) || listen(fz_rawl, 16) ||
	    getsockname(fz_rawl, (struct sockaddr *)&fz_raddr, &al))
		abort();
	return 0;
}

/* ------------------------------------------------------ script reading */
struct fz_in {
	const uint8_t *p;
	size_t n;
};

static uint8_t fz_u8(struct fz_in *in)
{
	uint8_t v = 0;

	if (in->n) {
		v = *in->p++;
		in->n--;
	}
	return v;
}

static void fz_bytes(struct fz_in *in, uint8_t *out, size_t len)
{
	for (size_t i = 0; i < len; i++)
		out[i] = fz_u8(in);
}

/* What the fuzzer's side knows of the handshake so far. */
struct fz_peer {
	int fd;
	bool knows;
	uint8_t scalar[32], share[32], peer_share[32], key[32];
	bool have_key;
	struct kvw_wire_welcome w; /* role 0: the server's WELCOME */
};

static void fz_frame(int fd, unsigned type, uint8_t major, uint32_t ep_id, const void *body, uint32_t len)
{
	uint8_t buf[24 + 256];

	if (len > 256)
		len = 256;
	kvw_wire_hdr_encode(buf, type, 0, len, ep_id);
	buf[4] = major;
	memcpy(buf + 24, body, len);
	(void)!send(fd, buf, 24 + len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Drives ctx a little and reads what came back; remembers a WELCOME or
 * HELLO's share. Returns false once the connection is gone. */
static bool fz_drive(kvw_ctx *ctx, struct fz_peer *p, int rounds)
{
	uint8_t buf[4096];
	bool alive = true;

	for (int i = 0; i < rounds; i++) {
		kvw_progress(ctx);
		ssize_t r = recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			alive = false;
		if (r >= (ssize_t)(24 + sizeof(struct kvw_wire_welcome)) && buf[6] == KVW_T_WELCOME)
			memcpy(&p->w, buf + 24, sizeof(p->w));
		if (r >= (ssize_t)(24 + sizeof(struct kvw_wire_hello)) && buf[6] == KVW_T_HELLO)
			memcpy(p->peer_share, buf + 24 + offsetof(struct kvw_wire_hello, nonce), 32);
	}
	return alive;
}

/* A share: the real one, one from a wrong secret, or raw bytes. */
static void fz_share(struct fz_in *in, struct fz_peer *p)
{
	uint8_t how = fz_u8(in);

	if (p->knows || (how & 1))
		kvw_auth_start(p->knows ? FZ_SECRET : "wrong", p->scalar, p->share);
	else
		fz_bytes(in, p->share, 32);
}

/* ------------------------------------------------- role 0: a client */
static void fz_client_step(struct fz_in *in, struct fz_peer *p, uint8_t op)
{
	uint8_t raw[256];

	switch (op % 6) {
	case 0: { /* HELLO */
		struct kvw_wire_hello h = {.flags = fz_u8(in) & 7, .rails = fz_u8(in) % 18};
		uint8_t major = fz_u8(in) & 1 ? 2 : KVW_WIRE_MAJOR;
		fz_share(in, p);
		memcpy(h.nonce, p->share, 32);
		snprintf(h.driver, sizeof(h.driver), "tcp");
		fz_frame(p->fd, KVW_T_HELLO, major, 0, &h, sizeof(h));
		break;
	}
	case 1: { /* AUTH: the right proof when the key is known */
		struct kvw_wire_auth a = {.ep_id = 9};
		if (p->knows && kvw_auth_finish(p->scalar, p->w.nonce, p->share, p->w.nonce, p->key) == KVW_OK)
			kvw_auth_mac(p->key, "kvw-C", p->w.nonce, p->share, a.mac);
		else
			fz_bytes(in, a.mac, 32);
		fz_frame(p->fd, KVW_T_AUTH, KVW_WIRE_MAJOR, p->w.ep_id, &a, sizeof(a));
		break;
	}
	case 2: { /* any frame, any length up to 256 */
		uint8_t type = fz_u8(in), len = fz_u8(in);
		fz_bytes(in, raw, len);
		fz_frame(p->fd, type, KVW_WIRE_MAJOR, fz_u8(in), raw, len);
		break;
	}
	case 3:
		fz_drive(fz_srv, p, 1 + fz_u8(in) % 8);
		break;
	case 4: { /* a rail JOIN of the session the WELCOME named */
		struct kvw_wire_hello h = {.flags = KVW_HELLO_JOIN, .rails = 2, .rail_idx = fz_u8(in) % 3,
					   .session = p->w.session};
		fz_bytes(in, h.nonce, 32);
		fz_frame(p->fd, KVW_T_HELLO, KVW_WIRE_MAJOR, p->w.ep_id, &h, sizeof(h));
		break;
	}
	default: { /* raw bytes */
		uint8_t len = fz_u8(in);
		fz_bytes(in, raw, len);
		(void)!send(p->fd, raw, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	}
}

static void fz_role_client(struct fz_in *in, bool knows)
{
	struct fz_peer p = {.knows = knows};
	kvw_ep *ep = NULL;

	p.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	while (connect(p.fd, (struct sockaddr *)&fz_laddr, sizeof(fz_laddr)) != 0) {
		if (errno != EINTR && errno != EAGAIN && errno != EINPROGRESS && errno != EALREADY) {
			if (errno == EISCONN)
				break;
			abort();
		}
		kvw_progress(fz_srv);
	}
	for (int steps = 0; in->n && steps < 64; steps++)
		fz_client_step(in, &p, fz_u8(in));
	shutdown(p.fd, SHUT_WR);
	for (int i = 0; i < 50 && fz_drive(fz_srv, &p, 4); i++)
		kvw_ctx_wait(fz_srv, 1);
	if (kvw_accept(fz_l, 0, &ep) == KVW_OK) {
		kvw_ep_info info = {.size = sizeof(info)};
		kvw_ep_query(ep, &info);
		if (!knows || !info.authenticated) {
			fprintf(stderr, "fuzz_handshake: the listener accepted a peer without the secret\n");
			abort();
		}
		kvw_ep_close(ep);
	}
	close(p.fd);
	for (int i = 0; i < 4; i++)
		kvw_progress(fz_srv);
}

/* ------------------------------------------------- role 1: a server */
static void fz_server_step(struct fz_in *in, struct fz_peer *p, uint8_t op)
{
	uint8_t raw[256];

	switch (op % 5) {
	case 0: { /* WELCOME */
		struct kvw_wire_welcome w = {.flags = fz_u8(in) & 3, .rails = fz_u8(in) % 18, .ep_id = fz_u8(in),
					     .session = fz_u8(in)};
		fz_share(in, p);
		memcpy(w.nonce, p->share, 32);
		if (p->knows &&
		    kvw_auth_finish(p->scalar, p->peer_share, p->peer_share, p->share, p->key) == KVW_OK)
			kvw_auth_mac(p->key, "kvw-S", p->peer_share, p->share, w.mac);
		else
			fz_bytes(in, w.mac, 32);
		fz_frame(p->fd, KVW_T_WELCOME, fz_u8(in) & 1 ? 2 : KVW_WIRE_MAJOR, 0, &w, sizeof(w));
		break;
	}
	case 1: { /* READY */
		struct kvw_wire_ready r = {.ep_id = fz_u8(in)};
		fz_frame(p->fd, KVW_T_READY, KVW_WIRE_MAJOR, 0, &r, sizeof(r));
		break;
	}
	case 2: {
		uint8_t type = fz_u8(in), len = fz_u8(in);
		fz_bytes(in, raw, len);
		fz_frame(p->fd, type, KVW_WIRE_MAJOR, fz_u8(in), raw, len);
		break;
	}
	case 3:
		fz_drive(fz_cli, p, 1 + fz_u8(in) % 8);
		break;
	default: {
		uint8_t len = fz_u8(in);
		fz_bytes(in, raw, len);
		(void)!send(p->fd, raw, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	}
}

static void fz_role_server(struct fz_in *in, bool knows)
{
	struct fz_peer p = {.knows = knows};
	char uri[64];
	kvw_ep *ep;

	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%u", ntohs(fz_raddr.sin_port));
	if (kvw_connect_start(fz_cli, uri, &ep) != KVW_OK)
		abort();
	for (int i = 0; (p.fd = accept4(fz_rawl, NULL, NULL, SOCK_CLOEXEC)) < 0; i++) {
		if (i > 100000)
			abort();
		kvw_progress(fz_cli);
		poll(NULL, 0, 0);
	}
	fz_drive(fz_cli, &p, 4); /* the client's HELLO */
	for (int steps = 0; in->n && steps < 64; steps++)
		fz_server_step(in, &p, fz_u8(in));
	fz_drive(fz_cli, &p, 8);
	if (!knows && kvw_ep_status(ep) == KVW_OK) {
		fprintf(stderr, "fuzz_handshake: the client finished a handshake with a server that "
			"does not know the secret\n");
		abort();
	}
	kvw_ep_close(ep);
	close(p.fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = {data + 1, size ? size - 1 : 0};

	if (size < 1)
		return 0;
	if (data[0] & 1)
		fz_role_server(&in, data[0] & 2);
	else
		fz_role_client(&in, data[0] & 2);
	return 0;
}
