/* SPDX-License-Identifier: MIT */
/* Framed, non-blocking byte stream over a socket (tcp rails, shm's unix
 * socket): a queue of frames to write with writev straight from the pages,
 * and a reader that places DATA payloads straight into granted blocks. */
#ifndef KVW_STREAM_H
#define KVW_STREAM_H
#include "driver.h"
#include <sys/uio.h>

struct kvw_txitem {
	uint8_t head[80];        /* header + fixed body (or a small ctrl frame): DESCV is 72 */
	uint32_t hlen;
	uint8_t *heap;           /* big ctrl frame, owned (used instead of head) */
	const uint8_t *payload;
	uint8_t *owned_payload;  /* bounce copy made by cancel, owned */
	uint64_t plen;
	uint64_t piece, stride;  /* piece > 0: payload gathered, piece i at payload + i * stride */
	uint64_t done;           /* bytes of head+payload written */
	bool is_data;            /* counts against KVW_STREAM_DATA_MAX */
	int fd;                  /* fd to pass with SCM_RIGHTS, or -1 */
	kvw_req *req;
	uint64_t not_before;     /* fault layer: not written before (ns) */
};

enum kvw_rx_state { KVW_RX_HDR, KVW_RX_BODY, KVW_RX_DATA_FIXED, KVW_RX_PAYLOAD };

struct kvw_stream;
/* Driver hook for frames the stream does not handle itself (MEM, DESC);
 * returns KVW_OK, or an error to fail the endpoint. */
typedef kvw_status (*kvw_stream_frame_fn)(struct kvw_stream *s, const struct kvw_wire_hdr *h,
					  const void *body);

struct kvw_stream {
	int fd;
	bool is_unix;
	bool dead;               /* no more frames in or out */
	bool broken;             /* the socket failed: not even a last flush */
	kvw_ep *ep;
	uint32_t rail;
	kvw_stream_frame_fn on_frame;
	void *drv;               /* driver context for on_frame */
	/* tx ring */
	struct kvw_txitem *tx;
	uint32_t tx_cap, tx_head, tx_tail; /* cap power of two */
	uint32_t tx_data;        /* data items queued */
	bool want_write;
	uint64_t tx_ctrl_bytes;  /* control bytes queued, bounded by max_tx_queue */
	uint64_t tx_stall_ns;    /* first EAGAIN with no byte written since, or 0 */
	struct kvw_fault *fault; /* config `fault`: link faults below the stream */
	uint64_t hold_until;     /* latest not_before queued (order on the rail) */
	/* rx */
	enum kvw_rx_state rx_state;
	uint8_t rx_hdr[sizeof(struct kvw_wire_hdr) + sizeof(struct kvw_wire_data)];
	struct kvw_wire_hdr rx_h;
	struct kvw_wire_data rx_d;
	uint8_t *rx_body;
	uint32_t rx_body_cap;
	uint64_t rx_got;
	uint8_t *rx_dst;         /* NULL = discard */
	int rx_fds[4];
	uint32_t rx_nfds;
	/* read-ahead: shm streams (no inline payload) read 64 KiB at a time;
	 * tcp reads at most header + DATA head (48 bytes) at a frame start,
	 * which can never reach a payload byte, so payloads still go straight
	 * from the socket into the granted pages */
	bool buffered;
	uint8_t *rb;
	uint32_t rb_cap, rb_pos, rb_len;
};

#define KVW_STREAM_DATA_MAX 512 /* data frames queued per stream */

kvw_status kvw_stream_init(struct kvw_stream *s, int fd, bool is_unix, kvw_ep *ep, uint32_t rail);
/* Large read-ahead for streams that never carry DATA payloads (shm). */
kvw_status kvw_stream_set_buffered(struct kvw_stream *s);
void kvw_stream_fini(struct kvw_stream *s);
/* Queues a control frame (copied) and, optionally, an fd to pass. */
kvw_status kvw_stream_ctrl(struct kvw_stream *s, const void *frame, size_t len, int pass_fd);
/* Queues a data frame: head (header + fixed body, <= 64 bytes, copied) and
 * a payload written straight from the caller's pages. false when full. */
bool kvw_stream_data(struct kvw_stream *s, const void *head, size_t hlen, const void *payload,
		     uint64_t plen, kvw_req *req);
/* The same for a gathered payload (kvw_frag.piece): plen / piece pieces,
 * piece i at payload + i * stride, written with one iovec each. */
bool kvw_stream_data_gather(struct kvw_stream *s, const void *head, size_t hlen,
			    const void *payload, uint64_t plen, uint64_t piece, uint64_t stride,
			    kvw_req *req);
/* Sender abort: drops req's queued frames; a frame already half written is
 * finished from a bounce copy, so req's pages are not read again. */
void kvw_stream_cancel(struct kvw_stream *s, kvw_req *req);
/* Writes what the socket takes. Fails the endpoint on a broken socket. */
void kvw_stream_flush(struct kvw_stream *s);
/* Last words on a stream that is going away (after a REJECT or at close):
 * writes the queued control frames if the socket still works, then reads
 * and drops what the peer sent (bounded) so that closing sends FIN, not an
 * RST that could destroy the REJECT in flight. */
void kvw_stream_flush_final(struct kvw_stream *s);
/* Reads and dispatches frames (bounded work per call). */
void kvw_stream_read(struct kvw_stream *s);
/* Takes one fd received with SCM_RIGHTS, or -1. */
int kvw_stream_take_fd(struct kvw_stream *s);
static inline bool kvw_stream_idle(const struct kvw_stream *s) { return s->tx_head == s->tx_tail; }
#endif
