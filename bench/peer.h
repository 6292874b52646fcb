/* SPDX-License-Identifier: MIT */
/* The peer tools `kvwire-bench compare` runs beside kvwire (iperf3,
 * ucx_perftest, perftest, dpdk-testpmd): one description per invocation,
 * from which both the argv that is executed and the command line that is
 * shown come, and a server's readiness detected rather than slept for. */
#ifndef KVB_PEER_H
#define KVB_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define KVB_CMD_ARGS 40  /* argv words, the program included */
#define KVB_CMD_ENVS 4   /* NAME=VALUE additions to the environment */
#define KVB_CMD_WORD 256 /* bytes of one word */

typedef enum kvb_role { KVB_ROLE_CLIENT, KVB_ROLE_SERVER } kvb_role;

/* What shows that a server accepts its client. */
typedef enum kvb_ready {
	KVB_READY_NONE,        /* nothing to wait for */
	KVB_READY_TCP_LISTEN,  /* it (or a child of it) holds a listening TCP socket on port */
	KVB_READY_UNIX_SOCKET, /* a unix socket listens at path (a file or abstract) */
} kvb_ready;

typedef struct kvb_cmd {
	kvb_role role;
	kvb_ready ready;
	int port;                           /* KVB_READY_TCP_LISTEN */
	char path[108];                     /* KVB_READY_UNIX_SOCKET */
	char out_path[256];                 /* stdout+stderr to this file ("" /dev/null) when started */
	unsigned argc, envc;
	bool overflow;                      /* a word or a slot did not fit: not started */
	char argv[KVB_CMD_ARGS][KVB_CMD_WORD]; /* argv[0]: the program, found in PATH */
	char env[KVB_CMD_ENVS][KVB_CMD_WORD];
} kvb_cmd;

void kvb_cmd_init(kvb_cmd *c, kvb_role role, const char *program);
/* Appends words, up to a NULL. */
void kvb_cmd_args(kvb_cmd *c, ...) __attribute__((sentinel));
/* Appends one word made by printf. */
void kvb_cmd_argf(kvb_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kvb_cmd_env(kvb_cmd *c, const char *name_value);
void kvb_cmd_ready_tcp(kvb_cmd *c, int port);
void kvb_cmd_ready_unix(kvb_cmd *c, const char *path);

/* word as one shell word (bare when safe, else in single quotes); the
 * length it needs; buf gets as much as fits, NUL-terminated. */
size_t kvb_shell_quote(const char *word, char *buf, size_t len);
/* "NAME=VALUE ... program arg ...", quoted for sh. 0, or -1 when it was cut
 * to fit (it then ends in "..."). */
int kvb_cmd_render(const kvb_cmd *c, char *buf, size_t len);
/* Several invocations as one line: each server then " & ", the client last. */
int kvb_cmds_render(const kvb_cmd *const *c, size_t n, char *buf, size_t len);
/* Pointers into c for execvp and putenv, NULL-terminated. */
void kvb_cmd_vectors(const kvb_cmd *c, char *argv[KVB_CMD_ARGS + 1], char *env[KVB_CMD_ENVS + 1]);

bool kvb_in_path(const char *program);

typedef struct kvb_proc {
	pid_t pid; /* -1: not running */
} kvb_proc;

/* Starts c, its stdout (and stderr) to out_path or /dev/null. A server is
 * then waited for until it is ready, at most deadline_ms (a stale socket
 * file at a unix-socket server's path is removed first). 0 ok; -1 with a
 * sentence in err, and nothing left running. */
int kvb_cmd_start(const kvb_cmd *c, int deadline_ms, kvb_proc *p, char *err, size_t errlen);
/* Whether a started server is ready now (the check kvb_cmd_start polls). */
bool kvb_cmd_is_ready(const kvb_cmd *c, pid_t pid);
/* Runs c to its end (at most timeout_s, then it is killed and *status is
 * -1); its stdout, malloc'ed, or NULL with a sentence in err. */
char *kvb_cmd_capture(const kvb_cmd *c, int timeout_s, int *status, char *err, size_t errlen);
/* Gives p grace_ms to exit by itself, then SIGTERM, then SIGKILL; reaps it. */
void kvb_proc_stop(kvb_proc *p, int grace_ms);

#endif
