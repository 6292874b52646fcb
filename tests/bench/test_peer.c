/* SPDX-License-Identifier: MIT */
/* compare's peer invocations: the shown command line is the argv that runs
 * (quoted for sh), and a server's readiness is detected, with a sentence and
 * a deadline when it never comes. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "peer.h"

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* What sh prints running line. */
static char *sh_output(const char *line)
{
	FILE *p = popen(line, "r");
	cr_assert_not_null(p);
	char *buf = calloc(1, 8192);
	size_t n = fread(buf, 1, 8191, p);
	buf[n] = '\0';
	pclose(p);
	return buf;
}

static int test_port(void)
{
	return 40000 + (int)(getpid() % 10000) * 2;
}

Test(peer, renders_plain_words_bare)
{
	kvb_cmd c;
	char line[256];
	kvb_cmd_init(&c, KVB_ROLE_CLIENT, "ucx_perftest");
	kvb_cmd_env(&c, "UCX_TLS=tcp");
	kvb_cmd_env(&c, "UCX_NET_DEVICES=lo");
	kvb_cmd_args(&c, "127.0.0.1", "-p", NULL);
	kvb_cmd_argf(&c, "%d", 20001);
	cr_assert_eq(kvb_cmd_render(&c, line, sizeof(line)), 0);
	cr_assert_str_eq(line, "UCX_TLS=tcp UCX_NET_DEVICES=lo ucx_perftest 127.0.0.1 -p 20001");
	char *argv[KVB_CMD_ARGS + 1], *env[KVB_CMD_ENVS + 1];
	kvb_cmd_vectors(&c, argv, env);
	cr_assert_str_eq(argv[0], "ucx_perftest");
	cr_assert_str_eq(argv[3], "20001");
	cr_assert_null(argv[4]);
	cr_assert_str_eq(env[1], "UCX_NET_DEVICES=lo");
	cr_assert_null(env[2]);
}

Test(peer, quotes_spaces_quotes_and_metacharacters)
{
	kvb_cmd c;
	char line[512];
	kvb_cmd_init(&c, KVB_ROLE_CLIENT, "printf");
	kvb_cmd_args(&c, "[%s]", "a b", "it's", "", "$HOME", "x;y", NULL);
	kvb_cmd_env(&c, "NAME=two words");
	cr_assert_eq(kvb_cmd_render(&c, line, sizeof(line)), 0);
	cr_assert_str_eq(line, "NAME='two words' printf '[%s]' 'a b' 'it'\\''s' '' '$HOME' 'x;y'");
	char q[64];
	cr_assert_eq(kvb_shell_quote("it's", q, sizeof(q)), strlen("'it'\\''s'"));
	cr_assert_str_eq(q, "'it'\\''s'");
}

/* sh, given the shown line, runs what kvwire-bench runs: same words, same env. */
Test(peer, shown_line_runs_the_same_argv)
{
	kvb_cmd c;
	char line[1024], err[300];
	int st;
	kvb_cmd_init(&c, KVB_ROLE_CLIENT, "sh");
	kvb_cmd_args(&c, "-c", "printf '[%s]' \"$KVB_T\" \"$@\"", "sh", "a b", "it's", "", "*", "tab\there",
		     "back\\slash", "\"dq\"", "$(echo no)", "~", NULL);
	kvb_cmd_env(&c, "KVB_T=two  words 'q' $X");
	cr_assert_eq(kvb_cmd_render(&c, line, sizeof(line)), 0);
	char *direct = kvb_cmd_capture(&c, 10, &st, err, sizeof(err));
	cr_assert_not_null(direct);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	cr_assert_str_eq(direct, "[two  words 'q' $X][a b][it's][][*][tab\there][back\\slash][\"dq\"][$(echo no)][~]");
	char *via_sh = sh_output(line);
	cr_assert_str_eq(via_sh, direct, "shown: %s", line);
	free(direct);
	free(via_sh);
}

Test(peer, servers_then_client_on_one_line)
{
	kvb_cmd s, c;
	char line[256];
	kvb_cmd_init(&s, KVB_ROLE_SERVER, "iperf3");
	kvb_cmd_args(&s, "-s", "-1", "-p", "20000", NULL);
	kvb_cmd_init(&c, KVB_ROLE_CLIENT, "iperf3");
	kvb_cmd_args(&c, "-c", "127.0.0.1", "-p", "20000", NULL);
	const kvb_cmd *both[] = {&s, &c};
	cr_assert_eq(kvb_cmds_render(both, 2, line, sizeof(line)), 0);
	cr_assert_str_eq(line, "iperf3 -s -1 -p 20000 & iperf3 -c 127.0.0.1 -p 20000");
}

Test(peer, cut_line_ends_in_dots)
{
	kvb_cmd c;
	char line[16];
	kvb_cmd_init(&c, KVB_ROLE_CLIENT, "iperf3");
	kvb_cmd_args(&c, "-c", "127.0.0.1", "-p", "20000", NULL);
	cr_assert_eq(kvb_cmd_render(&c, line, sizeof(line)), -1);
	cr_assert_lt(strlen(line), sizeof(line));
	cr_assert_str_eq(line + strlen(line) - 3, "...");
}

Test(peer, too_many_words_is_refused_with_a_sentence)
{
	kvb_cmd c;
	kvb_proc p;
	char err[300];
	kvb_cmd_init(&c, KVB_ROLE_CLIENT, "true");
	for (int i = 0; i < KVB_CMD_ARGS; i++)
		kvb_cmd_args(&c, "x", NULL);
	cr_assert(c.overflow);
	cr_assert_eq(kvb_cmd_start(&c, 100, &p, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "does not fit"), "%s", err);
}

/* The brief's case: a peer that never listens, given 500 ms. */
Test(peer, never_listening_server_fails_after_its_deadline, .timeout = 20)
{
	kvb_cmd c;
	kvb_proc p;
	char err[600];
	kvb_cmd_init(&c, KVB_ROLE_SERVER, "sleep");
	kvb_cmd_args(&c, "5", NULL);
	kvb_cmd_ready_tcp(&c, test_port());
	double t0 = now_s();
	cr_assert_eq(kvb_cmd_start(&c, 500, &p, err, sizeof(err)), -1);
	double took = now_s() - t0;
	cr_assert_geq(took, 0.45, "gave up after %.3f s", took);
	cr_assert_lt(took, 2.0, "took %.3f s", took);
	cr_assert_not_null(strstr(err, "`sleep 5` was not ready (listening on TCP port"), "%s", err);
	cr_assert_not_null(strstr(err, "within 500 ms"), "%s", err);
	cr_assert_not_null(strstr(err, "run that command by hand"), "%s", err);
	cr_assert_eq(p.pid, -1, "the server was stopped and reaped");
	cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no child left");
}

/* A port another process listens on is not this peer being ready. */
Test(peer, someone_elses_listener_is_not_readiness, .timeout = 20)
{
	int port = test_port() + 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) && !listen(fd, 1));
	kvb_cmd c;
	kvb_proc p;
	char err[600];
	kvb_cmd_init(&c, KVB_ROLE_SERVER, "sleep");
	kvb_cmd_args(&c, "5", NULL);
	kvb_cmd_ready_tcp(&c, port);
	cr_assert_eq(kvb_cmd_start(&c, 300, &p, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "within 300 ms"), "%s", err);
	close(fd);
}

Test(peer, server_that_exits_early_says_so, .timeout = 20)
{
	kvb_cmd c;
	kvb_proc p;
	char err[600];
	kvb_cmd_init(&c, KVB_ROLE_SERVER, "false");
	kvb_cmd_ready_tcp(&c, test_port());
	double t0 = now_s();
	cr_assert_eq(kvb_cmd_start(&c, 5000, &p, err, sizeof(err)), -1);
	cr_assert_lt(now_s() - t0, 2.0);
	cr_assert_not_null(strstr(err, "`false` ended (exit status 1) before it was ready"), "%s", err);
	kvb_cmd_init(&c, KVB_ROLE_SERVER, "kvb-no-such-tool");
	kvb_cmd_ready_tcp(&c, test_port());
	cr_assert_eq(kvb_cmd_start(&c, 5000, &p, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "cannot run kvb-no-such-tool (No such file or directory); install it"),
			   "%s", err);
}

static void need_python(void)
{
	if (!kvb_in_path("python3"))
		cr_skip_test("python3 is not installed (the listening test peer is a python3 one-liner)");
}

/* Ready as soon as it listens (after 300 ms here), not after a fixed sleep. */
Test(peer, tcp_listener_is_detected, .timeout = 30)
{
	need_python();
	int port = test_port() + 2;
	kvb_cmd c;
	kvb_proc p;
	char err[600];
	kvb_cmd_init(&c, KVB_ROLE_SERVER, "python3");
	kvb_cmd_args(&c, "-c", "import socket, sys, time; time.sleep(0.3); s = socket.socket(); "
		     "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(10)", NULL);
	kvb_cmd_argf(&c, "%d", port);
	kvb_cmd_ready_tcp(&c, port);
	double t0 = now_s();
	cr_assert_eq(kvb_cmd_start(&c, 10000, &p, err, sizeof(err)), 0, "%s", err);
	double took = now_s() - t0;
	cr_assert_geq(took, 0.25, "ready after %.3f s, before it listened", took);
	cr_assert(kvb_cmd_is_ready(&c, p.pid));
	kvb_proc_stop(&p, 0);
	cr_assert_eq(p.pid, -1);
}

/* A wrapper (timeout(1), a script) runs the listening tool as its child. */
Test(peer, listener_below_a_wrapper_is_detected, .timeout = 30)
{
	need_python();
	int port = test_port() + 3;
	kvb_cmd c;
	kvb_proc p;
	char err[600];
	kvb_cmd_init(&c, KVB_ROLE_SERVER, "timeout");
	kvb_cmd_args(&c, "20", "python3", "-c", "import socket, sys, time; s = socket.socket(); "
		     "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(10)", NULL);
	kvb_cmd_argf(&c, "%d", port);
	kvb_cmd_ready_tcp(&c, port);
	cr_assert_eq(kvb_cmd_start(&c, 10000, &p, err, sizeof(err)), 0, "%s", err);
	kvb_proc_stop(&p, 0);
}

Test(peer, unix_socket_is_detected_and_a_stale_one_is_not, .timeout = 30)
{
	need_python();
	char path[108];
	snprintf(path, sizeof(path), "/tmp/kvb-test-peer-%d.sock", (int)getpid());
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert(fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)));
	close(fd); /* the file stays: a stale socket */
	kvb_cmd c;
	kvb_proc p;
	char err[600];
	kvb_cmd_init(&c, KVB_ROLE_SERVER, "python3");
	kvb_cmd_args(&c, "-c", "import socket, sys, time; time.sleep(0.3); s = socket.socket(socket.AF_UNIX); "
		     "s.bind(sys.argv[1]); s.listen(); time.sleep(10)", path, NULL);
	kvb_cmd_ready_unix(&c, path);
	double t0 = now_s();
	cr_assert_eq(kvb_cmd_start(&c, 10000, &p, err, sizeof(err)), 0, "%s", err);
	cr_assert_geq(now_s() - t0, 0.25, "the stale socket was taken for readiness");
	kvb_proc_stop(&p, 0);
	unlink(path);
}

/* memif's server socket is abstract by default: no file, "@path" in /proc/net/unix. */
Test(peer, abstract_unix_socket_is_detected, .timeout = 30)
{
	need_python();
	char path[108];
	snprintf(path, sizeof(path), "/run/kvb-test-peer-abstract-%d.sock", (int)getpid());
	kvb_cmd c;
	kvb_proc p;
	char err[600];
	kvb_cmd_init(&c, KVB_ROLE_SERVER, "python3");
	kvb_cmd_args(&c, "-c", "import socket, sys, time; time.sleep(0.2); s = socket.socket(socket.AF_UNIX); "
		     "s.bind('\\0' + sys.argv[1]); s.listen(); time.sleep(10)", path, NULL);
	kvb_cmd_ready_unix(&c, path);
	cr_assert_eq(kvb_cmd_start(&c, 10000, &p, err, sizeof(err)), 0, "%s", err);
	cr_assert(kvb_cmd_is_ready(&c, p.pid));
	kvb_proc_stop(&p, 0);
	cr_assert_eq(kvb_cmd_is_ready(&c, -1), false, "gone with its server");
}

Test(peer, capture_returns_output_and_status, .timeout = 20)
{
	kvb_cmd c;
	char err[300];
	int st;
	kvb_cmd_init(&c, KVB_ROLE_CLIENT, "sh");
	kvb_cmd_args(&c, "-c", "echo hi; exit 3", NULL);
	char *out = kvb_cmd_capture(&c, 10, &st, err, sizeof(err));
	cr_assert_not_null(out, "%s", err);
	cr_assert_str_eq(out, "hi\n");
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3);
	free(out);
	kvb_cmd_init(&c, KVB_ROLE_CLIENT, "sleep");
	kvb_cmd_args(&c, "5", NULL);
	double t0 = now_s();
	out = kvb_cmd_capture(&c, 1, &st, err, sizeof(err));
	cr_assert_lt(now_s() - t0, 3.0);
	cr_assert_eq(st, -1, "a client past its time is killed");
	free(out);
	kvb_cmd_init(&c, KVB_ROLE_CLIENT, "kvb-no-such-tool");
	cr_assert_null(kvb_cmd_capture(&c, 1, &st, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "cannot run kvb-no-such-tool"), "%s", err);
}
