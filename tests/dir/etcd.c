/* SPDX-License-Identifier: MIT */
#include "etcd.h"
#include "kvwire/dir.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

bool etcd_installed(void)
{
	return system("command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1") == 0;
}

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &al) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static void etcd_exec(const struct etcd *e)
{
	char curl[64], purl[64], cluster[96], data[96], log[96];
	snprintf(curl, sizeof(curl), "http://127.0.0.1:%d", e->cport);
	snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", e->pport);
	snprintf(cluster, sizeof(cluster), "t=%s", purl);
	snprintf(data, sizeof(data), "%s/data", e->dir);
	snprintf(log, sizeof(log), "%s/log", e->dir);
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed test leaves no etcd behind */
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	dup2(fd, 1);
	dup2(fd, 2);
	execlp("etcd", "etcd", "--name", "t", "--data-dir", data, "--listen-client-urls", curl,
	       "--advertise-client-urls", curl, "--listen-peer-urls", purl,
	       "--initial-advertise-peer-urls", purl, "--initial-cluster", cluster,
	       "--log-level", "warn", (char *)NULL);
	_exit(127);
}

static bool etcd_ready(struct etcd *e)
{
	kvw_dir_opts o = {.size = sizeof(o), .timeout_ms = 500};
	for (int i = 0; i < 200; i++) {
		kvw_dir *d;
		if (kvw_dir_open(e->url, &o, &d) == KVW_OK) {
			kvw_dir_close(d);
			return true;
		}
		if (waitpid(e->pid, NULL, WNOHANG) == e->pid) {
			e->pid = 0;
			return false;
		}
		usleep(100000);
	}
	return false;
}

bool etcd_restart(struct etcd *e)
{
	if ((e->pid = fork()) == 0)
		etcd_exec(e);
	return e->pid > 0 && etcd_ready(e);
}

bool etcd_start(struct etcd *e)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "/tmp/kvwt-etcd.XXXXXX");
	if (!mkdtemp(e->dir))
		return false;
	e->cport = free_port();
	e->pport = free_port();
	snprintf(e->url, sizeof(e->url), "http://127.0.0.1:%d", e->cport);
	return etcd_restart(e);
}

void etcd_kill(struct etcd *e)
{
	if (e->pid > 0) {
		kill(e->pid, SIGCONT);
		kill(e->pid, SIGTERM);
		waitpid(e->pid, NULL, 0);
	}
	e->pid = 0;
}

void etcd_stop(struct etcd *e)
{
	char cmd[128];
	etcd_kill(e);
	if (e->dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", e->dir);
	}
	e->dir[0] = 0;
}

bool etcd_put_raw(const struct etcd *e, const char *key, const void *value, size_t len)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl --endpoints=%s put '%s' >/dev/null", e->url, key);
	FILE *f = popen(cmd, "w");
	if (!f)
		return false;
	bool ok = fwrite(value, 1, len, f) == len;
	return pclose(f) == 0 && ok;
}

int etcd_ctl(const struct etcd *e, const char *args)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl --endpoints=%s %s >/dev/null 2>&1", e->url, args);
	return system(cmd);
}
