/* SPDX-License-Identifier: MIT */
/* Hostile peers against the handshake (issue findings 2, 7, 8, 9): every
 * refusal reaches the peer as a REJECT with its status; nothing but small
 * handshake frames is read before READY; the shared secret can neither be
 * guessed offline from a handshake nor online without backoff, and it is
 * never shown. Runs on the driver of KVW_TEST_DRIVER (tcp, shm). */
#include "auth.h"
#include "kvw_int.h"
#include "kvwt.h"
#include "rawpeer.h"
#include "hc.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

TestSuite(hostile_hs, .timeout = 60);

static kvw_ctx *victim(const char *secret, kvw_listener **l)
{
	const char *const cfg[] = {"secret", secret ? secret : "", NULL};

	return hc_victim(cfg, l);
}

/* Sends bytes on a fresh connection; returns the REJECT status that came
 * back before the server closed (0 = closed without one, fails the test). */
static int32_t refused_with(kvw_ctx *c, kvw_listener *l, const void *bytes, size_t len)
{
	int fd = rawp_connect(kvw_listener_uri(l));
	int32_t rej = 0;

	cr_assert_geq(fd, 0);
	rawp_send(fd, bytes, len);
	cr_assert_eq(rawp_wait_closed(fd, c, 5000, &rej), 1, "the listener kept the connection");
	close(fd);
	cr_assert_neq(rej, 0, "closed without a REJECT frame");
	return rej;
}

static size_t hello(uint8_t *buf, uint8_t major, uint32_t rails, uint32_t flags, uint32_t len)
{
	struct kvw_wire_hello h = {.rails = rails, .flags = flags};

	snprintf(h.driver, sizeof(h.driver), "%s", kvwt_driver()->name);
	kvw_wire_hdr_encode(buf, KVW_T_HELLO, 0, len, 0);
	buf[4] = major;
	memcpy(buf + sizeof(struct kvw_wire_hdr), &h, sizeof(h));
	return sizeof(struct kvw_wire_hdr) + (len < sizeof(h) ? len : sizeof(h));
}

Test(hostile_hs, every_refusal_sends_reject)
{
	kvw_listener *l;
	kvw_ctx *c = victim(NULL, &l);
	uint8_t f[256];
	size_t n;

	n = hello(f, KVW_WIRE_MAJOR, 1, 0, sizeof(struct kvw_wire_hello));
	memcpy(f, "XXXX", 4);
	cr_expect_eq(refused_with(c, l, f, n), KVW_ERR_PROTO, "bad magic");
	n = hello(f, 2, 1, 0, sizeof(struct kvw_wire_hello));
	cr_expect_eq(refused_with(c, l, f, n), KVW_ERR_VERSION, "major 2");
	n = hello(f, KVW_WIRE_MAJOR, 1, 0, 0);
	cr_expect_eq(refused_with(c, l, f, n), KVW_ERR_PROTO, "length 0");
	n = hello(f, KVW_WIRE_MAJOR, 1, 0, 0xffffffffu);
	cr_expect_eq(refused_with(c, l, f, sizeof(struct kvw_wire_hdr)), KVW_ERR_PROTO, "length 2^32-1");
	n = hello(f, KVW_WIRE_MAJOR, 0, 0, sizeof(struct kvw_wire_hello));
	cr_expect_eq(refused_with(c, l, f, n), KVW_ERR_PROTO, "rails 0");
	n = hello(f, KVW_WIRE_MAJOR, 17, 0, sizeof(struct kvw_wire_hello));
	cr_expect_eq(refused_with(c, l, f, n), KVW_ERR_PROTO, "rails 17");
	n = hello(f, KVW_WIRE_MAJOR, 1, 0x80, sizeof(struct kvw_wire_hello));
	cr_expect_eq(refused_with(c, l, f, n), KVW_ERR_PROTO, "unknown flags");
	kvw_ctx_destroy(c);
}

Test(hostile_hs, no_secret_and_wrong_secret_get_reject)
{
	kvw_listener *l;
	kvw_ctx *c = victim("right-secret", &l);
	uint8_t f[256];
	size_t n = hello(f, KVW_WIRE_MAJOR, 1, 0, sizeof(struct kvw_wire_hello));

	cr_expect_eq(refused_with(c, l, f, n), KVW_ERR_AUTH, "no CPace share against a secret");
	kvw_ctx_destroy(c);
}

/* Before READY only the handshake's own small frames are read: a big body
 * is refused at its header (never buffered), driver frames (MEM, DESC,
 * DATA, GRANT) and PINGs are refused. */
Test(hostile_hs, nothing_but_handshake_before_ready)
{
	static const unsigned types[] = {KVW_T_GRANT, KVW_T_DATA, KVW_T_DESC, KVW_T_MEM, KVW_T_PING,
					 KVW_T_ACK, KVW_T_CLOSE};
	kvw_listener *l;
	kvw_ctx *c = victim("s3cret", &l);
	uint8_t f[64] = {0};

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		kvw_wire_hdr_encode(f, types[i], 0, 16, 0);
		cr_expect_eq(refused_with(c, l, f, 40), KVW_ERR_PROTO, "type %u before READY", types[i]);
	}
	kvw_wire_hdr_encode(f, KVW_T_HELLO, 0, 4u << 20, 0); /* 4 MiB "HELLO" */
	cr_expect_eq(refused_with(c, l, f, 24), KVW_ERR_PROTO, "4 MiB body before READY");
	kvw_ctx_destroy(c);
}

/* 200 connections, each announcing a 4 MiB GRANT body before any
 * handshake (found: 824 MiB of RSS): the listener must buffer none. */
Test(hostile_hs, big_bodies_before_auth_not_buffered, .timeout = 60)
{
	kvw_listener *l;
	kvw_ctx *c = victim("s3cret", &l);
	static uint8_t body[1u << 16];
	int fds[200];
	uint8_t h[24];
	long rss0 = kvwt_rss_kib(), rss1;

	kvw_wire_hdr_encode(h, KVW_T_GRANT, 0, 4u << 20, 0);
	for (int i = 0; i < 200; i++) {
		fds[i] = rawp_connect(kvw_listener_uri(l));
		cr_assert_geq(fds[i], 0);
		send(fds[i], h, sizeof(h), MSG_NOSIGNAL | MSG_DONTWAIT);
		for (int k = 0; k < 4; k++)
			send(fds[i], body, sizeof(body), MSG_NOSIGNAL | MSG_DONTWAIT);
		kvw_progress(c);
	}
	for (int i = 0; i < 200; i++)
		kvw_progress(c);
	rss1 = kvwt_rss_kib();
	cr_log_info("RSS before %ld KiB, after 200 x 4 MiB pre-auth bodies %ld KiB", rss0, rss1);
	cr_expect_lt(rss1 - rss0, 32 * 1024, "the listener buffered %ld KiB of pre-auth bodies", rss1 - rss0);
	for (int i = 0; i < 200; i++)
		close(fds[i]);
	kvw_ctx_destroy(c);
}

/* ------------------------------------------------------- the secret */
/* A connection from src (tcp: a loopback address of its own, so the
 * listener's per-address backoff can tell it apart; shm: ignored). */
static int connect_from(const char *uri, const char *src)
{
	struct kvw_uri u;
	struct sockaddr_in a = {.sin_family = AF_INET}, b = {.sin_family = AF_INET};
	int fd;

	if (strcmp(kvwt_driver()->name, "tcp") != 0 || !src)
		return rawp_connect(uri);
	cr_assert_eq(kvw_uri_parse(uri, &u), KVW_OK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	inet_pton(AF_INET, src, &b.sin_addr);
	cr_assert_eq(bind(fd, (struct sockaddr *)&b, sizeof(b)), 0);
	a.sin_port = htons((uint16_t)u.port);
	inet_pton(AF_INET, u.host, &a.sin_addr);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

struct cpace_try {
	uint8_t scalar[32], share[32];   /* the attacker's */
	struct kvw_wire_welcome w;       /* what the server answered */
	int32_t status;                  /* REJECT status, 0 = READY */
};

/* A CPace handshake with `guess` as the secret, as an attacker would run it. */
static void cpace_try(kvw_ctx *c, kvw_listener *l, const char *src, const char *guess,
		      struct cpace_try *t)
{
	static uint8_t body[4096];
	struct kvw_wire_hello h = {.rails = 1, .flags = KVW_HELLO_PAKE};
	struct kvw_wire_hdr hd;
	struct kvw_wire_auth a = {.ep_id = 9};
	uint8_t key[32];
	int fd = connect_from(kvw_listener_uri(l), src);

	memset(t, 0, sizeof(*t));
	cr_assert_eq(kvw_auth_start(guess, t->scalar, t->share), KVW_OK);
	memcpy(h.nonce, t->share, 32);
	snprintf(h.driver, sizeof(h.driver), "%s", kvwt_driver()->name);
	cr_assert_eq(rawp_frame(fd, KVW_T_HELLO, 0, &h, sizeof(h)), 0);
	cr_assert_eq(rawp_recv(fd, c, 5000, &hd, body, sizeof(body)), 1);
	if (hd.type == KVW_T_WELCOME) {
		memcpy(&t->w, body, sizeof(t->w));
		cr_assert_eq(kvw_auth_finish(t->scalar, t->w.nonce, t->share, t->w.nonce, key), KVW_OK);
		kvw_auth_mac(key, "kvw-C", t->w.nonce, t->share, a.mac);
		rawp_frame(fd, KVW_T_AUTH, t->w.ep_id, &a, sizeof(a));
		cr_assert_eq(rawp_recv(fd, c, 5000, &hd, body, sizeof(body)), 1);
	}
	if (hd.type == KVW_T_REJECT) {
		struct kvw_wire_reject r;
		memcpy(&r, body, sizeof(r));
		t->status = r.status;
	}
	close(fd);
}

/* What the old exchange leaked: WELCOME's mac was HMAC(H(secret), nonces),
 * so one HELLO let anyone test guesses offline. Now WELCOME confirms at
 * most the one guess the attacker's own share was made with: from its
 * transcript no guess -- not even the right one -- can be confirmed. */
Test(hostile_hs, welcome_gives_no_offline_guess)
{
	static const char *const dict[] = {"123456", "password", "kvwire", "right-secret", "letmein"};
	kvw_listener *l;
	kvw_ctx *c = victim("right-secret", &l);
	struct cpace_try t;
	uint8_t key[32], mac[32];
	crypto_auth_hmacsha512256_state s;

	cpace_try(c, l, "127.0.0.3", "wrong-guess", &t);
	cr_assert_eq(t.status, KVW_ERR_AUTH, "a wrong secret was not refused: %d", t.status);
	cr_assert(t.w.flags & KVW_WELCOME_AUTH);
	for (size_t i = 0; i < sizeof(dict) / sizeof(dict[0]); i++) {
		uint8_t k0[32];
		/* the offline check an attacker can run: its own DH value with
		 * the server's share, and the old HMAC keyed by the guess */
		cr_assert_eq(kvw_auth_finish(t.scalar, t.w.nonce, t.share, t.w.nonce, key), KVW_OK);
		kvw_auth_mac(key, "kvw-S", t.share, t.w.nonce, mac);
		cr_expect_neq(memcmp(mac, t.w.mac, 32), 0, "guess %s confirmed offline", dict[i]);
		crypto_generichash(k0, sizeof(k0), (const uint8_t *)dict[i], strlen(dict[i]), NULL, 0);
		crypto_auth_hmacsha512256_init(&s, k0, sizeof(k0));
		crypto_auth_hmacsha512256_update(&s, (const uint8_t *)"kvw-S", 5);
		crypto_auth_hmacsha512256_update(&s, t.share, 32);
		crypto_auth_hmacsha512256_update(&s, t.w.nonce, 32);
		crypto_auth_hmacsha512256_final(&s, mac);
		cr_expect_neq(memcmp(mac, t.w.mac, 32), 0, "old-style HMAC of %s matches", dict[i]);
	}
	cpace_try(c, l, "127.0.0.4", "right-secret", &t);
	cr_expect_eq(t.status, 0, "the right secret was refused: %s", kvw_strerror(t.status));
	kvw_ctx_destroy(c);
}

/* Online guessing: failures from one address buy it a growing backoff
 * (found: 2,000 wrong AUTHs in 0.86 s); other addresses keep being served. */
Test(hostile_hs, online_guessing_backs_off, .timeout = 60)
{
	const char *const good_cfg[] = {"secret", "right-secret", NULL};
	kvw_listener *l;
	kvw_ctx *c = victim("right-secret", &l), *good = kvwt_ctx(good_cfg);
	struct cpace_try t;
	unsigned tried = 0, refused = 0, n = 0;
	uint64_t end = kvwt_now_ms() + 3000;
	kvw_ep *ce = NULL, *se = NULL;

	while (kvwt_now_ms() < end) {
		cpace_try(c, l, "127.0.0.2", "guess", &t);
		tried += t.status == KVW_ERR_AUTH;
		refused += t.status == KVW_ERR_BUSY;
		n++;
		cr_assert(t.status == KVW_ERR_AUTH || t.status == KVW_ERR_BUSY, "attempt %u: %d", n, t.status);
	}
	cr_log_info("3 s of guessing: %u attempts, %u evaluated, %u refused by the backoff", n, tried, refused);
	cr_expect_leq(tried, 9, "%u guesses evaluated in 3 s", tried);
	cr_expect_gt(refused, 0);
	if (!strcmp(kvwt_driver()->name, "tcp")) { /* shm: every local peer is one address (uid) */
		uint64_t t0 = kvwt_now_ms();
		cr_expect_eq(kvwt_connect2(good, kvw_listener_uri(l), l, 3000, &ce, &se), KVW_OK,
			     "an honest peer was locked out: %s", kvw_ctx_last_error(good));
		cr_log_info("honest handshake during the attack: %llu ms", (unsigned long long)(kvwt_now_ms() - t0));
	}
	kvw_ctx_destroy(good);
	kvw_ctx_destroy(c);
}

/* The secret is never shown: not in URIs the library hands back, not in
 * its log lines. It can come from a file instead of a command line. */
Test(hostile_hs, secret_redacted_and_from_file)
{
	char uri[300], base[256], path[] = "/tmp/kvwt-secret-XXXXXX", logp[] = "/tmp/kvwt-log-XXXXXX";
	const char *const lg[] = {"log_level", "4", NULL};
	kvw_ctx *c = kvwt_ctx(lg), *cli;
	kvw_listener *l;
	kvw_ep *ce = NULL, *se = NULL;
	kvw_ep_info info = {.size = sizeof(info)};
	kvw_config *cfg;
	int fd = mkstemp(path), lfd = mkstemp(logp), saved = dup(2);
	char buf[1 << 16] = {0};

	if (!kvwt_driver()->raw_stream)
		cr_skip_test("stream drivers only");
	dup2(lfd, 2);
	kvwt_listen_uri(base, sizeof(base));
	snprintf(uri, sizeof(uri), "%s%shunter2=x&secret=hunter2", base, strchr(base, '?') ? "&" : "?");
	cr_assert_eq(kvw_listen(c, uri, &l), KVW_OK, "%s", kvw_ctx_last_error(c));
	cr_expect_null(strstr(kvw_listener_uri(l), "=hunter2"), "listener URI shows it: %s", kvw_listener_uri(l));
	cr_assert_eq(write(fd, "hunter2\n", 8), 8);
	close(fd);
	cr_assert_eq(kvw_config_create(&cfg), KVW_OK);
	kvw_config_set(cfg, "secret_file", path);
	kvw_config_set(cfg, "log_level", "4");
	cr_assert_eq(kvw_ctx_create(cfg, &cli), KVW_OK);
	snprintf(uri, sizeof(uri), "%s", kvw_listener_uri(l)); /* secret=***: the config's is used */
	cr_expect_eq(kvwt_connect2(cli, uri, l, 3000, &ce, &se), KVW_OK, "secret_file: %s",
		     kvw_ctx_last_error(cli));
	if (se) {
		cr_assert_eq(kvw_ep_query(se, &info), KVW_OK);
		cr_expect(info.authenticated);
	}
	kvw_ctx_destroy(cli);
	kvw_config_set(cfg, "secret_file", "/nonexistent/kvw-secret");
	cr_expect_eq(kvw_ctx_create(cfg, &cli), KVW_ERR_INVALID, "a missing secret_file was accepted");
	kvw_config_destroy(cfg);
	kvw_ctx_destroy(c);
	fflush(stderr);
	dup2(saved, 2);
	lseek(lfd, 0, SEEK_SET);
	cr_assert_geq(read(lfd, buf, sizeof(buf) - 1), 0);
	cr_expect_null(strstr(buf, "=hunter2"), "a log line shows the secret");
	close(lfd);
	unlink(path);
	unlink(logp);
}

/* A server's REJECT reason reaches kvw_ctx_last_error with its control
 * bytes escaped (it ends up on operators' terminals). */
Test(hostile_hs, reject_reason_escaped)
{
	struct kvw_wire_reject r = {.status = KVW_ERR_BUSY};
	kvw_ctx *c = kvwt_ctx(NULL);
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t al = sizeof(a);
	char uri[64];
	uint8_t hb[256];
	struct kvw_wire_hdr h;
	kvw_ep *ep;
	int ls = socket(AF_INET, SOCK_STREAM, 0), fd;

	if (strcmp(kvwt_driver()->name, "tcp") != 0)
		cr_skip_test("one raw server suffices (tcp)");
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	cr_assert_eq(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
	listen(ls, 1);
	getsockname(ls, (struct sockaddr *)&a, &al);
	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%u", ntohs(a.sin_port));
	cr_assert_eq(kvw_connect_start(c, uri, &ep), KVW_OK);
	while ((fd = accept(ls, NULL, NULL)) < 0)
		kvw_progress(c);
	cr_assert_eq(rawp_recv(fd, c, 3000, &h, hb, sizeof(hb)), 1);
	snprintf(r.reason, sizeof(r.reason), "busy \x1b]0;owned\x07\x1b[2J now");
	rawp_frame(fd, KVW_T_REJECT, 0, &r, sizeof(r));
	for (uint64_t end = kvwt_now_ms() + 3000; kvw_ep_status(ep) == KVW_INPROGRESS && kvwt_now_ms() < end;)
		kvw_progress(c);
	cr_assert_eq(kvw_ep_status(ep), KVW_ERR_BUSY);
	cr_expect_null(strchr(kvw_ctx_last_error(c), 0x1b), "raw ESC in: %s", kvw_ctx_last_error(c));
	cr_expect_not_null(strstr(kvw_ctx_last_error(c), "\\x1b"), "%s", kvw_ctx_last_error(c));
	close(fd);
	close(ls);
	kvw_ep_close(ep);
	kvw_ctx_destroy(c);
}

/* Wire 1.4 WELCOMEs carry the server's incarnation (96 bytes); a client
 * whose HELLO says minor 3 gets the 88 bytes a 1.3 peer takes. */
Test(hostile_hs, welcome_fits_the_client_minor)
{
	kvw_listener *l;
	kvw_ctx *c = victim(NULL, &l);
	struct kvw_wire_hello h = {.rails = 1, .session = 0x1234};
	struct kvw_wire_welcome w;
	struct kvw_wire_hdr rh;
	uint8_t body[256];

	snprintf(h.driver, sizeof(h.driver), "%s", kvwt_driver()->name);
	for (int minor = 3; minor <= KVW_WIRE_MINOR; minor++) {
		int fd = rawp_connect(kvw_listener_uri(l));
		cr_assert_geq(fd, 0);
		rawp_hello_minor = minor;
		rawp_frame(fd, KVW_T_HELLO, 0, &h, sizeof(h));
		cr_assert_eq(rawp_recv(fd, c, 5000, &rh, body, sizeof(body)), 1, "minor %d: no answer", minor);
		cr_assert_eq(rh.type, KVW_T_WELCOME, "minor %d: type %u", minor, rh.type);
		cr_assert_eq(rh.len, minor >= 4 ? sizeof(w) : KVW_WIRE_WELCOME_13, "minor %d: %u bytes", minor, rh.len);
		memcpy(&w, body, sizeof(w));
		if (minor >= 4)
			cr_assert_neq(w.incarnation, 0, "the server says its incarnation");
		close(fd);
	}
	rawp_hello_minor = -1;
	kvw_ctx_destroy(c);
}
