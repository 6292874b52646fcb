/* SPDX-License-Identifier: MIT */
/* Peer tool invocations: description, shell rendering, start with readiness
 * detection, capture, stop. */
#include "peer.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ description */
void kvb_cmd_init(kvb_cmd *c, kvb_role role, const char *program)
{
	memset(c, 0, sizeof(*c));
	c->role = role;
	kvb_cmd_args(c, program, NULL);
}

static void put_word(kvb_cmd *c, const char *w)
{
	if (c->argc >= KVB_CMD_ARGS || strlen(w) >= KVB_CMD_WORD) {
		c->overflow = true;
		return;
	}
	snprintf(c->argv[c->argc++], KVB_CMD_WORD, "%s", w);
}

void kvb_cmd_args(kvb_cmd *c, ...)
{
	va_list ap;
	va_start(ap, c);
	for (const char *w = va_arg(ap, const char *); w; w = va_arg(ap, const char *))
		put_word(c, w);
	va_end(ap);
}

void kvb_cmd_argf(kvb_cmd *c, const char *fmt, ...)
{
	char w[KVB_CMD_WORD];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(w, sizeof(w), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(w))
		c->overflow = true;
	else
		put_word(c, w);
}

void kvb_cmd_env(kvb_cmd *c, const char *name_value)
{
	if (c->envc >= KVB_CMD_ENVS || strlen(name_value) >= KVB_CMD_WORD || !strchr(name_value, '=')) {
		c->overflow = true;
		return;
	}
	snprintf(c->env[c->envc++], KVB_CMD_WORD, "%s", name_value);
}

void kvb_cmd_ready_tcp(kvb_cmd *c, int port)
{
	c->ready = KVB_READY_TCP_LISTEN;
	c->port = port;
}

void kvb_cmd_ready_unix(kvb_cmd *c, const char *path)
{
	c->ready = KVB_READY_UNIX_SOCKET;
	if (strlen(path) >= sizeof(c->path))
		c->overflow = true;
	snprintf(c->path, sizeof(c->path), "%s", path);
}

void kvb_cmd_vectors(const kvb_cmd *c, char *argv[KVB_CMD_ARGS + 1], char *env[KVB_CMD_ENVS + 1])
{
	for (unsigned i = 0; i < c->argc; i++)
		argv[i] = (char *)c->argv[i];
	argv[c->argc] = NULL;
	for (unsigned i = 0; i < c->envc; i++)
		env[i] = (char *)c->env[i];
	env[c->envc] = NULL;
}

/* -------------------------------------------------------------- rendering */
static bool shell_safe(const char *w)
{
	if (!*w)
		return false;
	for (; *w; w++)
		if (!isalnum((unsigned char)*w) && !strchr("_@%+=:,./-", *w))
			return false;
	return true;
}

size_t kvb_shell_quote(const char *word, char *buf, size_t len)
{
	size_t n = 0;
#define PUT(ch) do { if (n + 1 < len) buf[n] = (ch); n++; } while (0)
	if (shell_safe(word)) {
		for (const char *s = word; *s; s++)
			PUT(*s);
	} else {
		PUT('\'');
		for (const char *s = word; *s; s++) {
			if (*s == '\'') { /* close, an escaped quote, reopen */
				PUT('\'');
				PUT('\\');
				PUT('\'');
			}
			PUT(*s);
		}
		PUT('\'');
	}
#undef PUT
	if (len)
		buf[n < len ? n : len - 1] = '\0';
	return n;
}

typedef struct sbuf {
	char *buf;
	size_t len, used;
	bool cut;
} sbuf;

static void sb_put(sbuf *b, const char *s)
{
	size_t n = strlen(s);
	if (b->cut || b->used + n >= b->len) {
		b->cut = true;
		return;
	}
	memcpy(b->buf + b->used, s, n + 1);
	b->used += n;
}

/* One word, quoted; the program's name is quoted also when it has a '=' (sh
 * would take it for an assignment). */
static void sb_word(sbuf *b, const char *w, bool program)
{
	char q[4 * KVB_CMD_WORD + 3];
	if (program && strchr(w, '=') && shell_safe(w))
		snprintf(q, sizeof(q), "'%s'", w);
	else
		kvb_shell_quote(w, q, sizeof(q));
	sb_put(b, q);
}

/* NAME=VALUE with VALUE quoted, so that sh still reads an assignment. */
static void sb_env(sbuf *b, const char *nv)
{
	char name[KVB_CMD_WORD], q[4 * KVB_CMD_WORD + 3];
	const char *eq = strchr(nv, '=');
	snprintf(name, sizeof(name), "%.*s=", (int)(eq - nv), nv);
	kvb_shell_quote(eq + 1, q, sizeof(q));
	sb_put(b, name);
	sb_put(b, q);
}

static void sb_cmd(sbuf *b, const kvb_cmd *c)
{
	for (unsigned i = 0; i < c->envc; i++) {
		sb_env(b, c->env[i]);
		sb_put(b, " ");
	}
	for (unsigned i = 0; i < c->argc; i++) {
		if (i)
			sb_put(b, " ");
		sb_word(b, c->argv[i], i == 0);
	}
}

static int sb_end(sbuf *b)
{
	if (!b->cut)
		return 0;
	if (b->len >= 4)
		snprintf(b->buf + (b->used < b->len - 4 ? b->used : b->len - 4), 4, "...");
	return -1;
}

int kvb_cmd_render(const kvb_cmd *c, char *buf, size_t len)
{
	return kvb_cmds_render(&c, 1, buf, len);
}

int kvb_cmds_render(const kvb_cmd *const *c, size_t n, char *buf, size_t len)
{
	sbuf b = {.buf = buf, .len = len};
	if (!len)
		return -1;
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		sb_cmd(&b, c[i]);
		if (i + 1 < n)
			sb_put(&b, c[i]->role == KVB_ROLE_SERVER ? " & " : "; ");
	}
	return sb_end(&b);
}

bool kvb_in_path(const char *program)
{
	const char *path = getenv("PATH");
	char buf[4096];
	if (strchr(program, '/'))
		return !access(program, X_OK);
	if (!path)
		path = "/usr/bin:/bin";
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *save, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char full[4200];
		snprintf(full, sizeof(full), "%s/%s", d, program);
		if (!access(full, X_OK))
			return true;
	}
	return false;
}

/* ------------------------------------------------------------------ spawn */
static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void nap_ms(int ms)
{
	struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&t, NULL); /* a signal only makes it shorter */
}

/* A peer starts with every CPU allowed: a DPDK run earlier in this process
 * pinned it to one core, which children would inherit. */
static void unpin(void)
{
	cpu_set_t all;
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	CPU_ZERO(&all);
	for (long i = 0; i < n && i < CPU_SETSIZE; i++)
		CPU_SET(i, &all);
	sched_setaffinity(0, sizeof(all), &all);
}

/* In the child: stdin /dev/null; stdout to out_fd (a pipe), the server's
 * out_path (stderr too), or /dev/null; nothing else of this process open but
 * status_fd (close-on-exec), which gets errno when the exec fails. */
static void child_exec(const kvb_cmd *c, int out_fd, int status_fd)
{
	char *argv[KVB_CMD_ARGS + 1], *env[KVB_CMD_ENVS + 1];
	int nul = open("/dev/null", O_RDWR), out = nul, errfd = nul;

	unpin();
	if (out_fd >= 0)
		out = out_fd;
	else if (c->out_path[0])
		out = errfd = open(c->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (nul < 0 || out < 0)
		_exit(126);
	dup2(nul, 0);
	dup2(out, 1);
	dup2(errfd, 2);
	for (int f = 3; f < 4096; f++) /* nothing of this process's DPDK/kvwire state */
		if (f != status_fd)
			close(f);
	kvb_cmd_vectors(c, argv, env);
	for (size_t i = 0; env[i]; i++)
		putenv(env[i]);
	execvp(argv[0], argv);
	int e = errno;
	ssize_t w = write(status_fd, &e, sizeof(e));
	(void)w;
	_exit(127);
}

/* Waits for the child's exec: 0, or its errno when the exec failed. Until
 * then the child still holds this process's descriptors. */
static int exec_result(int status_fd)
{
	int e = 0;
	ssize_t n;
	do
		n = read(status_fd, &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(e) ? e : 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int spawn_failed(const kvb_cmd *c, const char *what, int e, char *err, size_t errlen)
{
	if (c->overflow || !c->argc)
		snprintf(err, errlen, "the %s command does not fit in kvwire-bench's limits (%d words of %d "
			 "bytes); report this as a bug", c->argc ? c->argv[0] : "peer", KVB_CMD_ARGS, KVB_CMD_WORD);
	else if (!strcmp(what, "exec"))
		snprintf(err, errlen, "cannot run %s (%s); install it or put it in PATH", c->argv[0], strerror(e));
	else
		snprintf(err, errlen, "cannot %s for %s (%s); check the process and open-file limits", what,
			 c->argv[0], strerror(e));
	return -1;
}

/* Forks and execs c, returning once it has exec'd; with out_fd, its stdout
 * is a pipe whose read end that gets. */
static int spawn(const kvb_cmd *c, int *out_fd, pid_t *pid, char *err, size_t errlen)
{
	int fds[2] = {-1, -1}, ex[2] = {-1, -1}, e;
	*pid = -1;
	if (c->overflow || !c->argc)
		return spawn_failed(c, "", 0, err, errlen);
	if ((out_fd && pipe2(fds, O_CLOEXEC)) || pipe2(ex, O_CLOEXEC)) {
		e = errno;
		close_fd(&fds[0]), close_fd(&fds[1]), close_fd(&ex[0]);
		return spawn_failed(c, "make a pipe", e, err, errlen);
	}
	fflush(NULL);
	*pid = fork();
	if (*pid == 0)
		child_exec(c, fds[1], ex[1]);
	e = *pid < 0 ? errno : 0;
	close_fd(&fds[1]);
	close_fd(&ex[1]);
	if (*pid > 0 && (e = exec_result(ex[0])) != 0)
		waitpid(*pid, NULL, 0);
	close_fd(&ex[0]);
	if (e) {
		close_fd(&fds[0]);
		spawn_failed(c, *pid > 0 ? "exec" : "fork", e, err, errlen);
		*pid = -1;
		return -1;
	}
	if (out_fd)
		*out_fd = fds[0];
	return 0;
}

/* -------------------------------------------------------------- readiness */
static bool holds_socket(pid_t pid, unsigned long ino)
{
	char dir[64], want[64], link[64], path[400];
	struct dirent *e;
	bool yes = false;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	snprintf(want, sizeof(want), "socket:[%lu]", ino);
	DIR *d = opendir(dir);
	while (d && !yes && (e = readdir(d))) {
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = '\0';
			yes = !strcmp(link, want);
		}
	}
	if (d)
		closedir(d);
	return yes;
}

/* holds_socket for pid or a process below it (a wrapper such as timeout(1)
 * or a script runs the tool as its child), depth levels down. */
static bool tree_holds_socket(pid_t pid, unsigned long ino, int depth)
{
	char dir[64], path[400];
	struct dirent *e;
	bool yes = holds_socket(pid, ino);

	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
	DIR *d = depth > 0 && !yes ? opendir(dir) : NULL;
	while (d && !yes && (e = readdir(d))) {
		snprintf(path, sizeof(path), "%s/%s/children", dir, e->d_name);
		FILE *f = e->d_name[0] != '.' ? fopen(path, "r") : NULL;
		int child;
		while (f && !yes && fscanf(f, "%d", &child) == 1)
			yes = tree_holds_socket(child, ino, depth - 1);
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
	return yes;
}

/* Whether table (/proc/net/tcp or tcp6) has a socket listening on port
 * that pid or its descendants hold (not some other program's). */
static bool tcp_listening(const char *table, int port, pid_t pid)
{
	char line[512];
	bool yes = false;
	FILE *f = fopen(table, "r");

	if (!f)
		return false;
	if (!fgets(line, sizeof(line), f)) /* the header */
		line[0] = '\0';
	while (!yes && fgets(line, sizeof(line), f)) {
		unsigned lport, st;
		unsigned long ino;
		if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu",
			   &lport, &st, &ino) == 3 && (int)lport == port && st == 0x0A /* LISTEN */)
			yes = tree_holds_socket(pid, ino, 3);
	}
	fclose(f);
	return yes;
}

/* Whether a unix socket listens at path, in the file system or (as memif
 * makes them by default) in the abstract namespace, shown as "@path". */
static bool unix_listening(const char *path)
{
	char line[512], name[300];
	bool yes = false;
	FILE *f = fopen("/proc/net/unix", "r");

	if (!f)
		return false;
	if (!fgets(line, sizeof(line), f)) /* the header */
		line[0] = '\0';
	while (!yes && fgets(line, sizeof(line), f)) {
		unsigned flags;
		if (sscanf(line, "%*s %*x %*x %x %*x %*x %*u %299s", &flags, name) == 2 &&
		    (flags & 0x10000) /* __SO_ACCEPTCON: listening */)
			yes = !strcmp(name, path) || (name[0] == '@' && !strcmp(name + 1, path));
	}
	fclose(f);
	return yes;
}

bool kvb_cmd_is_ready(const kvb_cmd *c, pid_t pid)
{
	switch (c->ready) {
	case KVB_READY_TCP_LISTEN:
		return tcp_listening("/proc/net/tcp", c->port, pid) || tcp_listening("/proc/net/tcp6", c->port, pid);
	case KVB_READY_UNIX_SOCKET:
		return unix_listening(c->path);
	case KVB_READY_NONE:
		break;
	}
	return true;
}

static void ready_what(const kvb_cmd *c, char *buf, size_t len)
{
	if (c->ready == KVB_READY_TCP_LISTEN)
		snprintf(buf, len, "listening on TCP port %d", c->port);
	else
		snprintf(buf, len, "listening on unix socket %s", c->path);
}

static void exit_why(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exit status %d", WEXITSTATUS(st));
	else
		snprintf(buf, len, "killed by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Polls until c is ready, it exits, or deadline_ms pass. */
static int wait_ready(const kvb_cmd *c, kvb_proc *p, int deadline_ms, char *err, size_t errlen)
{
	char cmd[512], what[160], why[96];
	uint64_t end = now_ms() + (uint64_t)(deadline_ms > 0 ? deadline_ms : 0);
	int st;

	for (;;) {
		if (kvb_cmd_is_ready(c, p->pid))
			return 0;
		if (waitpid(p->pid, &st, WNOHANG) == p->pid)
			break;
		if (now_ms() >= end) {
			kvb_proc_stop(p, 0);
			kvb_cmd_render(c, cmd, sizeof(cmd));
			ready_what(c, what, sizeof(what));
			snprintf(err, errlen, "peer server `%s` was not ready (%s) within %d ms; run that command "
				 "by hand to see why it does not start, or retry on a less loaded machine", cmd,
				 what, deadline_ms);
			return -1;
		}
		nap_ms(2);
	}
	p->pid = -1;
	kvb_cmd_render(c, cmd, sizeof(cmd));
	ready_what(c, what, sizeof(what));
	exit_why(st, why, sizeof(why));
	snprintf(err, errlen, "peer server `%s` ended (%s) before it was ready (%s); run that command by hand "
		 "to see why (a port or socket in use, a missing device or library)", cmd, why, what);
	return -1;
}

int kvb_cmd_start(const kvb_cmd *c, int deadline_ms, kvb_proc *p, char *err, size_t errlen)
{
	struct stat st;
	if (c->ready == KVB_READY_UNIX_SOCKET && !stat(c->path, &st) && S_ISSOCK(st.st_mode))
		unlink(c->path); /* a stale socket file of an earlier run would make bind fail */
	if (spawn(c, NULL, &p->pid, err, errlen))
		return -1;
	if (c->role != KVB_ROLE_SERVER || c->ready == KVB_READY_NONE)
		return 0;
	return wait_ready(c, p, deadline_ms, err, errlen);
}

/* ---------------------------------------------------------- run and stop */
/* Reads fd until EOF or end_ms into a malloc'ed string (NULL: no memory). */
static char *read_until(int fd, uint64_t end_ms)
{
	size_t len = 0, cap = 65536;
	char *buf = malloc(cap);
	struct pollfd pf = {.fd = fd, .events = POLLIN};

	while (buf && now_ms() < end_ms) {
		int pr = poll(&pf, 1, 200);
		if (pr < 0 && errno == EINTR) /* e.g. SIGCHLD of the loopback server */
			continue;
		if (pr < 0)
			break;
		if (!(pf.revents & (POLLIN | POLLHUP)))
			continue;
		if (len + 4096 > cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (buf)
		buf[len] = '\0';
	return buf;
}

/* Waits until end_ms for pid to end; true when it did (and is reaped). */
static bool reaped_by(pid_t pid, uint64_t end_ms, int *st)
{
	for (;;) {
		if (waitpid(pid, st, WNOHANG) == pid)
			return true;
		if (now_ms() >= end_ms)
			return false;
		nap_ms(2);
	}
}

char *kvb_cmd_capture(const kvb_cmd *c, int timeout_s, int *status, char *err, size_t errlen)
{
	pid_t pid;
	int fd;
	uint64_t end = now_ms() + (uint64_t)timeout_s * 1000;

	*status = -1;
	if (spawn(c, &fd, &pid, err, errlen))
		return NULL;
	char *out = read_until(fd, end);
	if (!out)
		snprintf(err, errlen, "out of memory for the output of %s", c->argv[0]);
	close(fd);
	if (!reaped_by(pid, end, status)) { /* past its time (or it closed stdout and ran on) */
		kill(pid, SIGKILL);
		waitpid(pid, status, 0);
		*status = -1;
	}
	return out;
}

void kvb_proc_stop(kvb_proc *p, int grace_ms)
{
	int st;
	if (p->pid <= 0)
		return;
	if (grace_ms <= 0 || !reaped_by(p->pid, now_ms() + (uint64_t)grace_ms, &st)) {
		kill(p->pid, SIGTERM);
		if (!reaped_by(p->pid, now_ms() + 3000, &st)) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &st, 0);
		}
	}
	p->pid = -1;
}
