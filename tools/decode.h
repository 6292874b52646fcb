/* SPDX-License-Identifier: MIT */
/* kvwire decode: internal interface between its input readers and the
 * frame decoder. */
#ifndef KVW_CLI_DECODE_H
#define KVW_CLI_DECODE_H
#include "cli.h"
#include "kvwire/kvwire.h"

/* Bounds on what one run reads and prints, whatever the input claims. */
#define DEC_MAX_INPUT (256u << 20)    /* bytes of FILE */
#define DEC_MAX_HEX (64u << 20)       /* bytes from hex text, '*' folds expanded */
#define DEC_MAX_FRAMES 20000u         /* frames listed */
#define DEC_MAX_NOTES 1000u           /* notes listed */

struct dec_result {
	json_t *frames;   /* array of decoded frames */
	json_t *notes;    /* array of strings: what the reader skipped and why */
	unsigned bad;     /* malformed frames */
	bool lenient_lead; /* leading non-frame bytes are a note (capture began mid-stream) */
	bool truncated;   /* DEC_MAX_FRAMES reached: the rest was not decoded */
	char stop[192];   /* where decoding stopped ("tcp a > b, stream byte 123") */
	unsigned notes_dropped;
};

/* Appends a note (a string), or counts it once DEC_MAX_NOTES are listed. */
void dec_note(struct dec_result *r, const char *msg);

/* Decodes a stream of back-to-back frames; origin names where it came from. */
void dec_stream(const uint8_t *buf, size_t len, const char *origin, struct dec_result *r);
/* Hex text (xxd, od -x, hexdump -C, plain) into bytes; false with *err set. */
bool dec_parse_hex(const char *text, size_t len, uint8_t **out, size_t *outlen, char *err,
		   size_t errlen);
/* A pcap capture: UDP payloads and reassembled TCP streams. */
bool dec_pcap(const uint8_t *buf, size_t len, struct dec_result *r, char *err, size_t errlen);
bool dec_is_pcap(const uint8_t *buf, size_t len);
#endif
