/* SPDX-License-Identifier: MIT */
/* kvwire CLI: output and small parsing helpers shared by the commands. */
#include "cli.h"
#include "kvwire/kvwire.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int cli_emit(json_t *doc, bool as_json, cli_human_fn human, int rc)
{
	if (!doc)
		return cli_err("output", CLI_EXIT_ERROR, "out of memory");
	cli_json_redact(doc);
	if (as_json) {
		json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(9) | JSON_ENSURE_ASCII);
		fputc('\n', stdout);
	} else {
		human(doc);
	}
	fflush(stdout);
	json_decref(doc);
	return rc;
}

int cli_err(const char *cmd, int rc, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "kvwire %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return rc;
}

bool cli_read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	size_t n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = 0;
	while (n && isspace((unsigned char)buf[n - 1]))
		buf[--n] = 0;
	return true;
}

long long cli_read_ll(const char *path, long long dflt)
{
	char buf[64], *end;
	if (!cli_read_line(path, buf, sizeof(buf)))
		return dflt;
	errno = 0;
	long long v = strtoll(buf, &end, 0);
	return (errno || end == buf) ? dflt : v;
}

bool cli_parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!s || !isdigit((unsigned char)*s))
		return false;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return false;
	unsigned shift = 0;
	switch (toupper((unsigned char)*end)) {
	case 0: break;
	case 'K': shift = 10; break;
	case 'M': shift = 20; break;
	case 'G': shift = 30; break;
	case 'T': shift = 40; break;
	default: return false;
	}
	if (*end) {
		end++;
		if (!strcasecmp(end, "ib") || !strcasecmp(end, "b"))
			end += strlen(end);
		if (*end)
			return false;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return false;
	*out = (uint64_t)v << shift;
	return true;
}

const char *cli_fmt_bytes(uint64_t b, char *buf, size_t len)
{
	static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	unsigned u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%lu B", (unsigned long)b);
	else
		snprintf(buf, len, "%.1f %s", v, unit[u]);
	return buf;
}

const char *cli_caps_str(uint32_t caps, char *buf, size_t len)
{
	static const struct { uint32_t bit; const char *name; } names[] = {
		{ KVW_CAP_ZERO_COPY_TX, "ZERO_COPY_TX" }, { KVW_CAP_ONE_SIDED, "ONE_SIDED" },
		{ KVW_CAP_MULTI_RAIL, "MULTI_RAIL" }, { KVW_CAP_RELIABLE_SW, "RELIABLE_SW" },
		{ KVW_CAP_AUTH, "AUTH" }, { KVW_CAP_SAME_HOST, "SAME_HOST" },
	};
	size_t off = 0;
	buf[0] = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!(caps & names[i].bit))
			continue;
		int n = snprintf(buf + off, len - off, "%s%s", off ? "|" : "", names[i].name);
		if (n < 0 || (size_t)n >= len - off)
			break;
		off += (size_t)n;
	}
	if (!off)
		snprintf(buf, len, "none");
	return buf;
}

/* Reads up to max + 1 bytes: one more than max says the file is too big. */
uint8_t *cli_slurp(const char *path, size_t max, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	struct stat sb;
	if (!f)
		return NULL;
	if (!fstat(fileno(f), &sb) && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > max) {
		if (f != stdin)
			fclose(f);
		errno = EFBIG; /* said before reading a byte */
		return NULL;
	}
	size_t cap = 65536, n = 0;
	uint8_t *buf = malloc(cap);
	while (buf && n <= max) {
		n += fread(buf + n, 1, cap - n, f);
		if (n < cap || n > max)
			break;
		size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
		uint8_t *nb = realloc(buf, ncap);
		if (!nb)
			free(buf);
		buf = nb;
		cap = ncap;
	}
	int err = !buf ? ENOMEM : ferror(f) ? EIO : n > max ? EFBIG : 0;
	if (f != stdin)
		fclose(f);
	if (err) {
		free(buf);
		errno = err;
		return NULL;
	}
	*len = n;
	return buf;
}

const char *cli_jstr(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

long long cli_jint(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_real(v))
		return (long long)json_real_value(v);
	return 0;
}

int cli_opts_json_only(int argc, char **argv, bool *as_json, int (*usage)(FILE *f, int rc))
{
	static const struct option opts[] = {
		{ "json", no_argument, 0, 'j' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
	int c;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		if (c != 'j')
			return usage(c == 'h' ? stdout : stderr, c == 'h' ? CLI_EXIT_OK : CLI_EXIT_USAGE);
		*as_json = true;
	}
	return -1;
}
