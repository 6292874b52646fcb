/* SPDX-License-Identifier: MIT */
/* kvwire operator CLI: shared declarations. Every command builds one JSON
 * document; `--json` prints it, otherwise the command's human printer does. */
#ifndef KVW_CLI_H
#define KVW_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes shared by every command (documented in kvwire(1)). */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1   /* a check failed, a peer is unreachable, a frame is malformed */
#define CLI_EXIT_USAGE 2  /* bad command line */
#define CLI_EXIT_ERROR 3  /* the tool could not do its job (I/O, library error) */

typedef void (*cli_human_fn)(const json_t *doc);

/* Prints doc (JSON or human), releases it, returns rc. */
int cli_emit(json_t *doc, bool as_json, cli_human_fn human, int rc);
/* Options of a command that takes only --json and --help. Returns -1 to go
 * on (optind at the first operand), else the exit status to return. */
int cli_opts_json_only(int argc, char **argv, bool *as_json, int (*usage)(FILE *f, int rc));
/* Prints "kvwire CMD: message" to stderr and returns rc. */
int cli_err(const char *cmd, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Reads a small text file (sysfs, procfs), trailing whitespace removed. */
bool cli_read_line(const char *path, char *buf, size_t len);
long long cli_read_ll(const char *path, long long dflt);
/* "64M", "1G", "4096", "2KiB" -> bytes. */
bool cli_parse_size(const char *s, uint64_t *out);
/* "1.5GiB" style. */
const char *cli_fmt_bytes(uint64_t b, char *buf, size_t len);
/* "ZERO_COPY_TX|MULTI_RAIL" */
const char *cli_caps_str(uint32_t caps, char *buf, size_t len);
/* Reads a whole file ("-" = stdin) of at most max bytes; *len set; NULL
 * on error (errno; EFBIG when it holds more than max). */
uint8_t *cli_slurp(const char *path, size_t max, size_t *len);

/* Text from a peer (or another process) for output: every secret=VALUE
 * shown as secret=***, and every byte that is not printable ASCII (control
 * characters, escape sequences, anything not ASCII) as \xNN, so nothing a
 * peer sends reaches the terminal as a control. Idempotent. Returns one of
 * 8 rotating buffers: valid until 8 more calls. */
const char *cli_safe(const char *s);
const char *cli_jsafe(const json_t *o, const char *key);
/* cli_safe(s) as a JSON string (never NULL for non-UTF-8 input). */
json_t *cli_jtext(const char *s);
/* s with each secret=VALUE (any case; VALUE up to '&' or white space)
 * replaced by secret=***; out always terminated. */
void cli_redact(const char *s, char *out, size_t len);
/* Redacts every string in doc that holds a secret= (recursively). */
void cli_json_redact(json_t *doc);
/* Overwrites the secret= values of a command-line argument in place, so
 * that ps and /proc/PID/cmdline stop showing them (copy it first). */
void cli_hide_arg(char *arg);
/* A context from the KVW_* environment; with secret_file (may be NULL) the
 * file's first line becomes config `secret`. Returns CLI_EXIT_OK or an
 * exit status after saying why. */
struct kvw_ctx;
int cli_ctx_open(const char *cmd, const char *secret_file, struct kvw_ctx **ctx);

/* JSON conveniences */
#define J_STR(s) json_string((s) ? (s) : "")
#define J_INT(v) json_integer((json_int_t)(v))
const char *cli_jstr(const json_t *o, const char *key);
long long cli_jint(const json_t *o, const char *key);

/* RDMA devices from sysfs, completed by libibverbs when built with it:
 * an array of {name, driver, numa_node, verbs, ports:[...]}; *why says
 * why the list is empty when it is. */
json_t *cli_rdma_scan(char *why, size_t whylen);
/* PCI network devices bound to a DPDK-capable kernel driver (sysfs). */
json_t *cli_dpdk_scan(void);
/* Whether this binary was built with libibverbs. */
bool cli_have_verbs(void);

int cmd_devices(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_ping(int argc, char **argv);
int cmd_listen(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_decode(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_pools(int argc, char **argv);

#endif
