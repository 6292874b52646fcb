/* SPDX-License-Identifier: MIT */
/* kvwire decode: input readers -- hex text in the common dump formats,
 * and pcap captures (UDP datagrams; TCP streams reassembled best-effort). */
#include "decode.h"

#include <ctype.h>
#include <arpa/inet.h>
#ifdef KVW_CLI_HAVE_PCAP
#include <pcap/pcap.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- hex text */
struct hexbuf {
	uint8_t *b;
	size_t n, cap;
	bool full; /* a bound was hit: the input is hex, only too much of it */
};

/* Room for more bytes, up to DEC_MAX_HEX in all. */
static bool hex_reserve(struct hexbuf *h, size_t more)
{
	if (more > DEC_MAX_HEX - h->n)
		return false;
	if (h->n + more <= h->cap)
		return true;
	size_t cap = h->cap ? h->cap : 4096;
	while (cap < h->n + more)
		cap *= 2;
	cap = cap < DEC_MAX_HEX ? cap : DEC_MAX_HEX;
	uint8_t *nb = realloc(h->b, cap);
	if (!nb)
		return false;
	h->b = nb;
	h->cap = cap;
	return true;
}

static bool hex_push(struct hexbuf *h, uint8_t v)
{
	if (h->n == h->cap && !hex_reserve(h, 1))
		return false;
	h->b[h->n++] = v;
	return true;
}

/* The sentence for a failed hex_reserve/hex_push. */
static bool hex_full(struct hexbuf *h, char *err, size_t errlen, size_t ln, size_t more)
{
	h->full = true;
	if (more > DEC_MAX_HEX - h->n)
		snprintf(err, errlen, "line %zu: the dump holds more than %u MiB, the most decode takes "
			 "from hex text: dump only the part you need (xxd -s OFFSET -l LEN, od -j OFFSET "
			 "-N LEN)", ln, DEC_MAX_HEX >> 20);
	else
		snprintf(err, errlen, "line %zu: out of memory: decode a shorter piece of the dump", ln);
	return false;
}

static bool hex_all(const char *t, size_t n, const char *digits)
{
	for (size_t i = 0; i < n; i++)
		if (!strchr(digits, tolower((unsigned char)t[i])))
			return false;
	return n > 0;
}

/* Splits a line into tokens (in place); returns their count. */
static size_t hex_tokens(char *line, char **tok, size_t max)
{
	size_t n = 0;
	for (char *p = strtok(line, " \t\r,"); p && n < max; p = strtok(NULL, " \t\r,"))
		tok[n++] = p;
	return n;
}

/* Removes the offset column (its value into *offset, -1 when none) and
 * the ASCII column; says whether the words are od -x style (16-bit
 * little-endian words to swap back into byte order). */
static char *hex_strip(char *line, bool lone_ok, bool *swap, long long *offset)
{
	char *cut = strpbrk(line, "|>");  /* hexdump -C / od -t x1z ASCII column */
	if (cut)
		*cut = 0;
	while (isspace((unsigned char)*line))
		line++;
	*swap = false;
	*offset = -1;
	char *sp = line + strcspn(line, " \t");
	size_t first = (size_t)(sp - line);
	if (first > 1 && line[first - 1] == ':') { /* xxd: "00000010: 4b56 ...  KVW1" */
		char *ascii = strstr(sp + 1, "  ");
		if (ascii)
			*ascii = 0;
		*offset = strtoll(line, NULL, 16);
		return sp;
	}
	if (first < 6)
		return line;
	/* od: 7-digit octal offset, then 4-digit words (od -x) or bytes;
	 * hexdump/od -A x: hex offset. A lone offset ends a dump. */
	char *rest = sp + strspn(sp, " \t");
	size_t w = strcspn(rest, " \t");
	bool octal = first == 7 && hex_all(line, 7, "01234567");
	if (octal && w == 4)
		*swap = true;
	if (hex_all(line, first, "0123456789abcdef") && (w == 2 || w == 4 || (!*rest && lone_ok))) {
		*offset = strtoll(line, NULL, octal ? 8 : 16);
		return sp;
	}
	return line;
}

static bool hex_token(struct hexbuf *h, char *t, bool swap, char *err, size_t errlen, size_t ln)
{
	char one[3] = "0";
	if (!strncasecmp(t, "0x", 2)) {
		t += 2;
		if (strlen(t) == 1) /* C array style 0x0 */
			t = strcat(one, t);
	}
	size_t n = strlen(t);
	if (!hex_all(t, n, "0123456789abcdef") || n % 2) {
		snprintf(err, errlen, "line %zu: '%.32s' is not hex bytes", ln, t);
		return false;
	}
	uint8_t tmp[256];
	size_t k = 0;
	for (size_t i = 0; i + 1 < n && k < sizeof(tmp); i += 2) {
		char b[3] = { t[i], t[i + 1], 0 };
		tmp[k++] = (uint8_t)strtoul(b, NULL, 16);
	}
	if (swap && k == 2) {
		uint8_t x = tmp[0];
		tmp[0] = tmp[1];
		tmp[1] = x;
	}
	for (size_t i = 0; i < k; i++)
		if (!hex_push(h, tmp[i]))
			return hex_full(h, err, errlen, ln, 1);
	return true;
}

/* od and hexdump print '*' for repeated lines; the next offset says how
 * many bytes the previous line's content repeats for. */
struct hex_fold {
	bool star;
	bool offsets;   /* the dump has an offset column (a lone offset ends it) */
	size_t last_start, last_len;
};

/* Repeats the last line up to offset: copies of what is already there,
 * doubling, so a long fold costs a few memcpy calls. */
static bool hex_unfold(struct hexbuf *h, struct hex_fold *f, long long offset, char *err,
		       size_t errlen, size_t ln)
{
	f->star = false;
	if (offset < 0 || (unsigned long long)offset < h->n || !f->last_len) {
		snprintf(err, errlen, "line %zu: cannot expand the '*' before it (offset %lld); rerun "
			 "od/hexdump with -v", ln, offset);
		return false;
	}
	size_t more = (unsigned long long)offset - h->n > DEC_MAX_HEX ? DEC_MAX_HEX + 1 :
		      (size_t)offset - h->n;
	if (!hex_reserve(h, more))
		return hex_full(h, err, errlen, ln, more);
	size_t base = h->n, first = f->last_len < more ? f->last_len : more;
	memcpy(h->b + base, h->b + f->last_start, first); /* the last line ends at or before base */
	for (size_t done = first; done < more;) { /* [base, base+done) holds whole periods */
		size_t k = done < more - done ? done : more - done;
		memcpy(h->b + base + done, h->b + base, k);
		done += k;
	}
	h->n = base + more;
	return true;
}

static bool hex_line(struct hexbuf *h, char *line, struct hex_fold *f, char *err, size_t errlen,
		     size_t ln)
{
	bool swap;
	long long offset;
	char *p = line + strspn(line, " \t\r");
	if (!strncmp(p, "*", 1) && !p[1 + strspn(p + 1, " \t\r")]) {
		f->star = true;
		return true;
	}
	char *body = hex_strip(line, f->offsets, &swap, &offset);
	f->offsets |= offset >= 0;
	if (f->star && !hex_unfold(h, f, offset, err, errlen, ln))
		return false;
	char *tok[512];
	size_t nt = hex_tokens(body, tok, 512), start = h->n;
	for (size_t t = 0; t < nt; t++)
		if (!hex_token(h, tok[t], swap, err, errlen, ln))
			return false;
	if (h->n > start) {
		f->last_start = start;
		f->last_len = h->n - start;
	}
	return true;
}

/* A parse error says the input is none of the formats; a bound does not. */
static bool hex_not(char *err, size_t errlen, bool full)
{
	char why[512];
	if (!full) {
		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "not a pcap, raw frames or hex dump: %s", why);
	}
	return false;
}

bool dec_parse_hex(const char *text, size_t len, uint8_t **out, size_t *outlen, char *err,
		   size_t errlen)
{
	struct hexbuf h = { 0 };
	struct hex_fold fold = { 0 };
	char line[4096];
	size_t ln = 0, i = 0;
	while (i < len) {
		size_t e = i;
		while (e < len && text[e] != '\n')
			e++;
		size_t n = e - i < sizeof(line) - 1 ? e - i : sizeof(line) - 1;
		memcpy(line, text + i, n);
		line[n] = 0;
		i = e + 1;
		ln++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		if (!hex_line(&h, line, &fold, err, errlen, ln)) {
			free(h.b);
			return hex_not(err, errlen, h.full);
		}
	}
	if (fold.star) {
		snprintf(err, errlen, "the dump ends with '*' (folded repeated lines) and no final "
			 "offset: rerun od/hexdump with -v");
		free(h.b);
		return hex_not(err, errlen, false);
	}
	if (!h.n) {
		snprintf(err, errlen, "no hex bytes found");
		free(h.b);
		return hex_not(err, errlen, false);
	}
	*out = h.b;
	*outlen = h.n;
	return true;
}

/* -------------------------------------------------------------------- pcap */
bool dec_is_pcap(const uint8_t *b, size_t len)
{
	static const uint8_t m[][4] = { { 0xd4, 0xc3, 0xb2, 0xa1 }, { 0xa1, 0xb2, 0xc3, 0xd4 },
					{ 0x4d, 0x3c, 0xb2, 0xa1 }, { 0xa1, 0xb2, 0x3c, 0x4d },
					{ 0x0a, 0x0d, 0x0d, 0x0a } };
	for (size_t i = 0; len >= 4 && i < 5; i++)
		if (!memcmp(b, m[i], 4))
			return true;
	return false;
}

#ifdef KVW_CLI_HAVE_PCAP
#define DEC_MAX_FLOWS 64

struct dec_seg {
	uint32_t seq;
	uint32_t len;
	uint8_t *data;
};

struct dec_flow {
	char name[160];
	uint32_t isn;
	bool have_isn;
	struct dec_seg *segs;
	size_t n, cap;
};

struct dec_pcap_ctx {
	struct dec_flow flows[DEC_MAX_FLOWS];
	size_t n_flows;
	struct dec_result *r;
	unsigned long pkts, udp_kvw, skipped;
};

static struct dec_flow *dec_flow_get(struct dec_pcap_ctx *c, const char *name)
{
	for (size_t i = 0; i < c->n_flows; i++)
		if (!strcmp(c->flows[i].name, name))
			return &c->flows[i];
	if (c->n_flows == DEC_MAX_FLOWS)
		return NULL;
	struct dec_flow *f = &c->flows[c->n_flows++];
	snprintf(f->name, sizeof(f->name), "%s", name);
	return f;
}

static void dec_tcp_seg(struct dec_pcap_ctx *c, const char *name, uint32_t seq, bool syn,
			const uint8_t *p, size_t n)
{
	struct dec_flow *f = dec_flow_get(c, name);
	if (!f) {
		c->skipped++;
		return;
	}
	if (syn) {
		f->isn = seq + 1;
		f->have_isn = true;
	}
	if (!n)
		return;
	if (!f->have_isn) {
		f->isn = seq;
		f->have_isn = true;
	}
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 64;
		struct dec_seg *ns = realloc(f->segs, cap * sizeof(*ns));
		if (!ns)
			return;
		f->segs = ns;
		f->cap = cap;
	}
	uint8_t *d = malloc(n);
	if (!d)
		return;
	memcpy(d, p, n);
	f->segs[f->n++] = (struct dec_seg){ seq - f->isn, (uint32_t)n, d };
}

static void dec_udp(struct dec_pcap_ctx *c, const char *name, const uint8_t *p, size_t n)
{
	if (n < 4 || memcmp(p, "KVW1", 4)) {
		c->skipped++;
		return;
	}
	c->udp_kvw++;
	dec_stream(p, n, name, c->r);
}

/* IPv4/IPv6 -> UDP or TCP; anything else is skipped. */
static void dec_ip(struct dec_pcap_ctx *c, const uint8_t *p, size_t n)
{
	char src[64], dst[64], name[160];
	uint8_t proto;
	size_t hl;
	if (n >= 20 && (p[0] >> 4) == 4) {
		hl = (size_t)(p[0] & 15) * 4;
		size_t tot = (size_t)p[2] << 8 | p[3];
		proto = p[9];
		if (hl < 20 || tot < hl || tot > n || ((p[6] & 0x3f) | p[7])) { /* fragments skipped */
			c->skipped++;
			return;
		}
		n = tot;
		snprintf(src, sizeof(src), "%u.%u.%u.%u", p[12], p[13], p[14], p[15]);
		snprintf(dst, sizeof(dst), "%u.%u.%u.%u", p[16], p[17], p[18], p[19]);
	} else if (n >= 40 && (p[0] >> 4) == 6) {
		hl = 40;
		proto = p[6];
		size_t pl = (size_t)p[4] << 8 | p[5];
		if (40 + pl < n)
			n = 40 + pl;
		snprintf(src, sizeof(src), "[ipv6]");
		snprintf(dst, sizeof(dst), "[ipv6]");
		inet_ntop(AF_INET6, p + 8, src, sizeof(src));
		inet_ntop(AF_INET6, p + 24, dst, sizeof(dst));
	} else {
		c->skipped++;
		return;
	}
	const uint8_t *l4 = p + hl;
	size_t l4n = n - hl;
	if (proto == 17 && l4n >= 8) {
		snprintf(name, sizeof(name), "udp %s:%u > %s:%u", src, l4[0] << 8 | l4[1], dst,
			 l4[2] << 8 | l4[3]);
		dec_udp(c, name, l4 + 8, l4n - 8);
	} else if (proto == 6 && l4n >= 20 && (size_t)(l4[12] >> 4) * 4 <= l4n) {
		size_t th = (size_t)(l4[12] >> 4) * 4;
		uint32_t seq = (uint32_t)l4[4] << 24 | (uint32_t)l4[5] << 16 | (uint32_t)l4[6] << 8 | l4[7];
		snprintf(name, sizeof(name), "tcp %s:%u > %s:%u", src, l4[0] << 8 | l4[1], dst,
			 l4[2] << 8 | l4[3]);
		dec_tcp_seg(c, name, seq, l4[13] & 0x02, l4 + th, l4n - th);
	} else {
		c->skipped++;
	}
}

/* Strips the link layer; returns the IP packet or NULL. */
static const uint8_t *dec_link(int dlt, const uint8_t *p, size_t *n)
{
	size_t off;
	uint16_t et;
	switch (dlt) {
	case DLT_EN10MB:
		if (*n < 14)
			return NULL;
		off = 12;
		et = (uint16_t)(p[off] << 8 | p[off + 1]);
		while ((et == 0x8100 || et == 0x88a8) && *n >= off + 6) {
			off += 4;
			et = (uint16_t)(p[off] << 8 | p[off + 1]);
		}
		off += 2;
		break;
	case DLT_LINUX_SLL:
		off = 16;
		break;
	case DLT_LINUX_SLL2:
		off = 20;
		break;
	case DLT_NULL:
	case DLT_LOOP:
		off = 4;
		break;
	case DLT_RAW:
	case DLT_IPV4:
	case DLT_IPV6:
		off = 0;
		break;
	default:
		return NULL;
	}
	if (*n < off)
		return NULL;
	*n -= off;
	return p + off;
}

static int dec_seg_cmp(const void *a, const void *b)
{
	const struct dec_seg *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Orders a flow's segments, drops retransmitted bytes, names gaps. */
static void dec_flow_decode(struct dec_pcap_ctx *c, struct dec_flow *f)
{
	if (!f->n)
		return; /* handshake only, no payload */
	qsort(f->segs, f->n, sizeof(*f->segs), dec_seg_cmp);
	size_t total = 0;
	for (size_t i = 0; i < f->n; i++)
		total += f->segs[i].len;
	uint8_t *buf = malloc(total ? total : 1);
	size_t len = 0;
	uint32_t next = f->n ? f->segs[0].seq : 0;
	for (size_t i = 0; buf && i < f->n; i++) {
		struct dec_seg *s = &f->segs[i];
		if (s->seq > next) {
			char msg[320];
			snprintf(msg, sizeof(msg), "%s: %u bytes missing from the capture at stream offset "
				 "%u; decoding resumes at the next frame start", f->name, s->seq - next, next);
			dec_note(c->r, msg);
			dec_stream(buf, len, f->name, c->r);
			c->r->lenient_lead = true; /* resumes mid-frame */
			len = 0;
			next = s->seq;
		}
		uint32_t skip = next - s->seq;
		if (skip < s->len) {
			memcpy(buf + len, s->data + skip, s->len - skip);
			len += s->len - skip;
			next = s->seq + s->len;
		}
	}
	if (buf && len)
		dec_stream(buf, len, f->name, c->r);
	c->r->lenient_lead = false;
	free(buf);
	for (size_t i = 0; i < f->n; i++)
		free(f->segs[i].data);
	free(f->segs);
}

bool dec_pcap(const uint8_t *buf, size_t len, struct dec_result *r, char *err, size_t errlen)
{
	char perr[PCAP_ERRBUF_SIZE] = "";
	FILE *mf = fmemopen((void *)buf, len, "rb");
	pcap_t *pc = mf ? pcap_fopen_offline(mf, perr) : NULL;
	if (!pc) {
		snprintf(err, errlen, "cannot read the pcap: %s", mf ? perr : "fmemopen failed");
		if (mf)
			fclose(mf);
		return false;
	}
	static struct dec_pcap_ctx c;
	memset(&c, 0, sizeof(c));
	c.r = r;
	int dlt = pcap_datalink(pc);
	struct pcap_pkthdr *ph;
	const uint8_t *pkt;
	while (pcap_next_ex(pc, &ph, &pkt) == 1) {
		size_t n = ph->caplen;
		const uint8_t *ip = dec_link(dlt, pkt, &n);
		c.pkts++;
		if (ip)
			dec_ip(&c, ip, n);
		else
			c.skipped++;
	}
	pcap_close(pc); /* closes mf */
	for (size_t i = 0; i < c.n_flows; i++) {
		/* a capture may start mid-stream; a flow without any frame is not kvwire */
		c.r->lenient_lead = true;
		dec_flow_decode(&c, &c.flows[i]);
	}
	char msg[320];
	snprintf(msg, sizeof(msg), "pcap: %lu packets (link type %s), %lu UDP datagrams with kvwire "
		 "frames, %zu TCP flows, %lu packets skipped (not IP/UDP/TCP, fragments, not kvwire)",
		 c.pkts, pcap_datalink_val_to_name(dlt) ? pcap_datalink_val_to_name(dlt) : "?",
		 c.udp_kvw, c.n_flows, c.skipped);
	dec_note(r, msg);
	return true;
}
#else
bool dec_pcap(const uint8_t *buf, size_t len, struct dec_result *r, char *err, size_t errlen)
{
	(void)buf, (void)len, (void)r;
	snprintf(err, errlen, "this kvwire was built without libpcap (install libpcap-dev and "
		 "rebuild), or convert the capture: tshark -r FILE -T fields -e data");
	return false;
}
#endif
