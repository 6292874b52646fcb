/* SPDX-License-Identifier: MIT */
/* kvwire CLI: what reaches the operator's terminal and process listing.
 * Text a peer sent (REJECT reasons inside error sentences, URIs, a stats
 * socket's snapshot) is printed escaped, secret= values never show, and a
 * secret can come from a file instead of the command line. */
#include "cli.h"
#include "kvwire/kvwire.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CLI_SAFE_BUFS 8
#define CLI_SAFE_LEN 2048
#define CLI_SECRET_MAX 127 /* the library keeps 128 bytes with the NUL */

static bool cli_value_end(char c)
{
	return !c || c == '&' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* No value, or prose ("a URI's ?secret=, which ..."): a lone punctuation
 * mark before white space. */
static bool cli_no_value(const char *v)
{
	return cli_value_end(*v) || (strchr(",:;.)", *v) && cli_value_end(v[1]));
}

/* Start of the VALUE of a "secret=VALUE" at s (NULL when s is not one, or
 * it is redacted already). */
static const char *cli_secret_at(const char *s)
{
	if (strncasecmp(s, "secret=", 7) || cli_no_value(s + 7))
		return NULL;
	return strncmp(s + 7, "***", 3) || !cli_no_value(s + 10) ? s + 7 : NULL;
}

void cli_redact(const char *s, char *out, size_t len)
{
	size_t o = 0;
	if (!len)
		return;
	for (const char *p = s ? s : ""; *p && o + 1 < len;) {
		const char *v = cli_secret_at(p);
		if (!v) {
			out[o++] = *p++;
			continue;
		}
		int n = snprintf(out + o, len - o, "%.7s***", p);
		o = n < 0 ? o : (size_t)n >= len - o ? len - 1 : o + (size_t)n;
		for (p = v; !cli_value_end(*p); p++)
			; /* all of it, punctuation too: "S:" may be the secret */
	}
	out[o] = 0;
}

static bool cli_printable(unsigned char c)
{
	return c >= 0x20 && c < 0x7f;
}

const char *cli_safe(const char *s)
{
	static char bufs[CLI_SAFE_BUFS][CLI_SAFE_LEN], red[CLI_SAFE_LEN];
	static unsigned next;
	char *out = bufs[next++ % CLI_SAFE_BUFS];
	size_t o = 0;
	cli_redact(s, red, sizeof(red));
	for (const unsigned char *p = (const unsigned char *)red; *p; p++) {
		if (o + 8 >= CLI_SAFE_LEN) { /* room for \xNN and "..." */
			memcpy(out + o, "...", 4);
			return out;
		}
		if (cli_printable(*p))
			out[o++] = (char)*p;
		else
			o += (size_t)snprintf(out + o, CLI_SAFE_LEN - o, "\\x%02x", *p);
	}
	out[o] = 0;
	return out;
}

const char *cli_jsafe(const json_t *o, const char *key)
{
	return cli_safe(cli_jstr(o, key));
}

json_t *cli_jtext(const char *s)
{
	return json_string(cli_safe(s ? s : ""));
}

void cli_json_redact(json_t *doc)
{
	const char *k;
	json_t *v;
	size_t i;
	if (json_is_string(doc) && strcasestr(json_string_value(doc), "secret=")) {
		size_t len = 2 * json_string_length(doc) + 16; /* "secret=a" grows to "secret=***" */
		char *buf = malloc(len);
		if (buf)
			cli_redact(json_string_value(doc), buf, len);
		if (!buf || json_string_set(doc, buf))
			json_string_set(doc, "(redacted)");
		free(buf);
	} else if (json_is_object(doc)) {
		json_object_foreach(doc, k, v)
			cli_json_redact(v);
	} else if (json_is_array(doc)) {
		json_array_foreach(doc, i, v)
			cli_json_redact(v);
	}
}

void cli_hide_arg(char *arg)
{
	for (char *p = arg; p && *p; p++) {
		char *v = p + 7;
		size_t n = strncasecmp(p, "secret=", 7) ? 0 : strcspn(v, "&"), star = n < 3 ? n : 3;
		if (!n || (n == 3 && !strncmp(v, "***", 3)))
			continue;
		memset(v, '*', star);
		memmove(v + star, v + n, strlen(v + n) + 1);
		memset(v + star + strlen(v + star), 0, n - star); /* was the value's tail */
		p = v + star - 1;
	}
}

/* First line of path (a file, a pipe): at most CLI_SECRET_MAX bytes. */
static int cli_secret_read(const char *cmd, const char *path, char *out, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb))
		return cli_err(cmd, CLI_EXIT_USAGE, "cannot read the secret file %s: %s: give a "
			       "readable file whose first line is the secret", path, strerror(errno));
	if (S_ISREG(sb.st_mode) && (sb.st_mode & 077))
		fprintf(stderr, "kvwire %s: warning: other users can read the secret file %s: "
			"chmod 600 %s\n", cmd, path, path);
	size_t n = 0;
	ssize_t got = 1;
	while (n + 1 < len && got > 0 && !memchr(out, '\n', n))
		if ((got = read(fd, out + n, len - 1 - n)) > 0)
			n += (size_t)got;
	int err = got < 0 ? errno : 0;
	close(fd);
	out[n] = 0;
	out[strcspn(out, "\r\n")] = 0;
	if (err || !*out || strlen(out) > CLI_SECRET_MAX) {
		explicit_bzero(out, len);
		if (err)
			return cli_err(cmd, CLI_EXIT_USAGE, "cannot read the secret file %s: %s: give a "
				       "readable file whose first line is the secret", path, strerror(err));
		return cli_err(cmd, CLI_EXIT_USAGE, "the first line of the secret file %s is %s", path,
			       n && *out ? "longer than 127 bytes: use a shorter secret" :
			       "empty: put the secret on it");
	}
	return CLI_EXIT_OK;
}

static int cli_cfg_secret(const char *cmd, kvw_config *cfg, const char *path)
{
	char secret[CLI_SECRET_MAX + 2];
	int rc = cli_secret_read(cmd, path, secret, sizeof(secret));
	if (rc != CLI_EXIT_OK)
		return rc;
	kvw_status st = kvw_config_set(cfg, "secret", secret);
	explicit_bzero(secret, sizeof(secret));
	/* the library reads secret_file too (and lets it win over `secret`):
	 * name ours so that a KVW_SECRET_FILE in the environment does not */
	if (st == KVW_OK)
		st = kvw_config_set(cfg, "secret_file", path);
	if (st != KVW_OK)
		return cli_err(cmd, CLI_EXIT_USAGE, "the library refuses the secret from %s (%s): "
			       "put a secret of 1 to 127 bytes on its first line", path, kvw_strerror(st));
	return CLI_EXIT_OK;
}

int cli_ctx_open(const char *cmd, const char *secret_file, kvw_ctx **ctx)
{
	kvw_config *cfg = NULL;
	kvw_status st = kvw_config_create(&cfg);
	if (st != KVW_OK)
		return cli_err(cmd, CLI_EXIT_ERROR, "the KVW_* environment holds a value the library "
			       "refuses (%s): `kvwire config` shows them; fix or unset it", kvw_strerror(st));
	int rc = secret_file ? cli_cfg_secret(cmd, cfg, secret_file) : CLI_EXIT_OK;
	if (rc == CLI_EXIT_OK && (st = kvw_ctx_create(cfg, ctx)) != KVW_OK)
		rc = cli_err(cmd, CLI_EXIT_ERROR, "cannot create a context: %s (check the KVW_* "
			     "environment and the secret file with `kvwire config`)", kvw_strerror(st));
	kvw_config_destroy(cfg);
	return rc;
}
