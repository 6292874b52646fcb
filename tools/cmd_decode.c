/* SPDX-License-Identifier: MIT */
/* kvwire decode FILE|-: kvwire frames from a hex dump (xxd, od -x,
 * hexdump -C, plain hex), raw binary frames, or a pcap, into named fields.
 * Exit 0 when every frame is well formed, 1 when any is malformed, 3 when
 * the input cannot be read. */
#include "decode.h"
#include "wire.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void dec_print_obj(const json_t *o, const char *indent)
{
	const char *k;
	const json_t *v;
	int col = 0;
	printf("%s", indent);
	json_object_foreach((json_t *)o, k, v) {
		char *s = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		int n = printf("%s=%s ", k, s ? s : json_string_value(v));
		free(s);
		col += n;
		if (col > 80) {
			printf("\n%s", indent);
			col = 0;
		}
	}
	printf("\n");
}

static void dec_human(const json_t *doc)
{
	const json_t *f, *e;
	size_t i, j;
	json_array_foreach(json_object_get(doc, "notes"), i, e)
		printf("note: %s\n", json_string_value(e));
	json_array_foreach(json_object_get(doc, "frames"), i, f) {
		const json_t *h = json_object_get(f, "header");
		printf("frame %zu @%lld %s%s%s", i, cli_jint(f, "offset"), cli_jstr(f, "origin"),
		       *cli_jstr(f, "origin") ? ": " : "", h ? cli_jstr(h, "type_name") : "(no header)");
		if (h)
			printf(" v%lld.%lld flags=0x%02llx len=%lld ep_id=%lld psn=%lld ack=%lld",
			       cli_jint(h, "major"), cli_jint(h, "minor"), cli_jint(h, "flags"),
			       cli_jint(h, "len"), cli_jint(h, "ep_id"), cli_jint(h, "psn"), cli_jint(h, "ack"));
		printf("  %s\n", json_is_true(json_object_get(f, "ok")) ? "OK" : "MALFORMED");
		if (json_is_object(json_object_get(f, "body")))
			dec_print_obj(json_object_get(f, "body"), "    ");
		json_array_foreach(json_object_get(f, "errors"), j, e)
			printf("    error: %s\n", json_string_value(e));
	}
	printf("%lld frames, %lld malformed\n", (long long)json_array_size(json_object_get(doc, "frames")),
	       cli_jint(doc, "malformed"));
}

static int dec_usage(FILE *f, int rc)
{
	fprintf(f, "usage: kvwire decode [--json] FILE|-\n"
		"FILE: hex text (xxd, od -x, hexdump -C, plain hex), raw frames, or a pcap.\n"
		"Bounds: FILE up to %u MiB, %u MiB from hex text ('*' folds expanded), %u frames.\n",
		DEC_MAX_INPUT >> 20, DEC_MAX_HEX >> 20, DEC_MAX_FRAMES);
	return rc;
}

/* Hex dumps are printable ASCII; anything else is taken as raw frames. */
static bool dec_is_text(const uint8_t *data, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((data[i] < 0x20 && !isspace(data[i])) || data[i] >= 0x7f)
			return false;
	return true;
}

/* Fills r from the input, whichever format it is in. */
static int dec_input(const uint8_t *data, size_t len, struct dec_result *r, json_t *doc)
{
	char err[512];
	if (dec_is_pcap(data, len)) {
		json_object_set_new(doc, "input", json_string("pcap"));
		if (!dec_pcap(data, len, r, err, sizeof(err)))
			return cli_err("decode", CLI_EXIT_ERROR, "%s", err);
		return CLI_EXIT_OK;
	}
	if (!dec_is_text(data, len)) {
		json_object_set_new(doc, "input", json_string("binary"));
		dec_stream(data, len, "", r);
		return CLI_EXIT_OK;
	}
	uint8_t *bytes;
	size_t n;
	if (!dec_parse_hex((const char *)data, len, &bytes, &n, err, sizeof(err)))
		return cli_err("decode", CLI_EXIT_ERROR, "%s", err);
	json_object_set_new(doc, "input", json_string("hex"));
	dec_stream(bytes, n, "", r);
	free(bytes);
	return CLI_EXIT_OK;
}

/* Says what the bounds left out; 3 when frames were not decoded. */
static int dec_bounds(struct dec_result *r, int rc)
{
	char msg[512];
	if (r->notes_dropped) {
		snprintf(msg, sizeof(msg), "%u more notes not listed (at most %u are)", r->notes_dropped,
			 DEC_MAX_NOTES);
		json_array_append_new(r->notes, json_string(msg));
	}
	if (!r->truncated)
		return rc;
	snprintf(msg, sizeof(msg), "stopped after %u frames, the most one run lists: the input from "
		 "%s on was not decoded; decode a later piece of it (tail -c +BYTE, or editcap for a "
		 "capture) to check the rest", DEC_MAX_FRAMES, r->stop);
	json_array_append_new(r->notes, json_string(msg));
	fprintf(stderr, "kvwire decode: %s\n", msg);
	return CLI_EXIT_ERROR;
}

static int dec_read_err(const char *path)
{
	if (errno == EFBIG)
		return cli_err("decode", CLI_EXIT_ERROR, "%s holds more than %u MiB, the most decode "
			       "reads: cut it into pieces (head -c, split, or editcap -c for a capture) and "
			       "decode each", path, DEC_MAX_INPUT >> 20);
	return cli_err("decode", CLI_EXIT_ERROR, "cannot read %s: %s", path, strerror(errno));
}

int cmd_decode(int argc, char **argv)
{
	bool as_json = false;
	int orc = cli_opts_json_only(argc, argv, &as_json, dec_usage);
	if (orc >= 0)
		return orc;
	if (optind + 1 != argc)
		return dec_usage(stderr, CLI_EXIT_USAGE);
	size_t len = 0;
	uint8_t *data = cli_slurp(argv[optind], DEC_MAX_INPUT, &len);
	if (!data)
		return dec_read_err(argv[optind]);
	struct dec_result r = { .frames = json_array(), .notes = json_array() };
	json_t *doc = json_object();
	int rc = dec_input(data, len, &r, doc);
	free(data);
	if (rc != CLI_EXIT_OK) {
		json_decref(doc);
		json_decref(r.frames);
		json_decref(r.notes);
		return rc;
	}
	rc = dec_bounds(&r, r.bad ? CLI_EXIT_FAIL : CLI_EXIT_OK);
	json_object_set_new(doc, "notes", r.notes);
	json_object_set_new(doc, "frames", r.frames);
	json_object_set_new(doc, "malformed", json_integer(r.bad));
	json_object_set_new(doc, "truncated", json_boolean(r.truncated));
	return cli_emit(doc, as_json, dec_human, rc);
}
