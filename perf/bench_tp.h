/*
 * psplus-bench-tp: what bench_tp.c (command line, set-up, the rounds of the control protocol)
 * and bench_tp_run.c (the measuring loops) share.
 *
 * A run is a connection and a sequence of rounds, one per message size. The client drives:
 *
 *   client                                   server
 *   START (test, size, seed, depth, ...) ->
 *                                        <-  READY (its sink buffer, slots) or a refusal
 *   write_bw/send_bw: data ops ...       ->  counted and checked
 *   END (ops sent, checksum of sample)   ->
 *                                        <-  RESULT (ops seen, checksum of what landed, bad)
 *   send_lat/write_lat: ping             ->  pong, n times; then END / RESULT as above
 *   gather:                              <-  write_imm of gathered table rows ...
 *                                        <-  END (the sender's numbers, checksum, bytes_copied)
 *   RESULT (ops seen, checksum)          ->
 *   ... next round ...  BYE              ->  the server exits
 *
 * Control messages are two-sided sends from a registered buffer (so they add nothing to
 * bytes_copied) and always ask for a completion (so an unsignalled chain can never fill the
 * send queue). They are told from data by their first word (BT_TAG_CTL), as data slots of the
 * send tests begin with BT_TAG_DATA. The connection is ordered, so END arrives after the data.
 */
#ifndef PS_PERF_BENCH_TP_H
#define PS_PERF_BENCH_TP_H

#include <stdbool.h>
#include <stdint.h>

#include "common/mem.h"
#include "perf/bench_common.h"
#include "transport/transport.h"

#define BT_PROG		 "psplus-bench-tp"
#define BT_PROTO_VERSION 1u
#define BT_TAG_CTL	 0x50534243u /* "PSBC" in the high half of the first word */
#define BT_TAG_DATA	 0x50534244u /* "PSBD": data slot of a send test, slot in the low half */
/*
 * Each side registers one area: a source half and a sink half of BT_HALF bytes, then the
 * control-message ring. A round's slots are min(depth, BT_HALF / stride): enough that every
 * operation in flight has its own slot while the area stays small enough to register once.
 */
#define BT_HALF		 (16u << 20)
#define BT_CTL_SLOTS	 16u
#define BT_CTL_SLOT_SIZE 256u
#define BT_AREA_SIZE	 (2u * BT_HALF + BT_CTL_SLOTS * BT_CTL_SLOT_SIZE)
#define BT_MAX_SIZE	 BT_HALF /* largest -s */
#define BT_MAX_DEPTH	 4096u	 /* largest -q */
#define BT_POLL_BATCH	 32	 /* events per ps_tp_poll(): a CQ poll's worth */
#define BT_SAMPLE_EVERY	 16u	 /* send tests: every 16th message is checked in full */
#define BT_CTL_MSG_SIZE	 4096u	 /* msg_size when no send test needs more */
/*
 * -e: how long one ps_tp_poll() may sleep. Every loop polls again after it (and checks its own
 * timeout), so this only bounds how late a loop notices the end of a duration with no traffic.
 */
#define BT_EVENTS_WAIT_MS 100
#define BT_MAX_PAIRS	  16u	     /* largest --contig-pairs */
#define BT_LAT_MAX	  (1u << 22) /* latency samples kept (-D mode stops there) */
#define BT_FLAG_ROWS_SEQ  1u /* gather: consecutive rows from a random start, not random rows */
#define BT_SERVER_SALT	  0x5bd1e9955bd1e995ull /* the server's source pattern: seed ^ salt */

enum bt_test {
	BT_WRITE_BW = 1,
	BT_SEND_BW,
	BT_SEND_LAT,
	BT_WRITE_LAT,
	BT_GATHER,
};

enum bt_msg {
	BT_MSG_START = 1,
	BT_MSG_READY,
	BT_MSG_END,
	BT_MSG_RESULT,
	BT_MSG_BYE,
};

/* A control message: fixed layout, host byte order (the tool runs little-endian only). */
struct bt_ctl {
	uint64_t tag;		/* (uint64_t)BT_TAG_CTL << 32 | enum bt_msg */
	uint32_t version;	/* BT_PROTO_VERSION */
	int32_t status;		/* READY: 0 or why the server refuses (negative code) */
	uint32_t test;		/* enum bt_test */
	uint32_t depth;		/* operations in flight */
	uint32_t cq_mod;	/* every cq_mod-th operation asks for a completion */
	uint32_t rows;		/* gather: rows per gather */
	uint32_t row_size;	/* gather: bytes per row */
	uint32_t nslots;	/* READY: slots of the round */
	uint32_t chunks;	/* READY (gather): write_imms per gather, chosen by the sender */
	uint32_t flags;		/* START: BT_FLAG_* */
	uint64_t size;		/* bytes per operation (gather: rows * row_size) */
	uint64_t iters;		/* iterations; 0: duration mode */
	uint64_t duration_ms;	/* duration mode: how long the sender runs */
	uint64_t margin_ms;	/* duration mode: not sampled at either end */
	uint64_t seed;		/* pattern seed of the round */
	struct ps_tp_rbuf rbuf; /* START: the client's sink half; READY: the server's */
	uint64_t ops;		/* END: operations sent; RESULT: operations received */
	uint64_t bytes;		/* payload bytes sent / received */
	uint64_t win_ops;	/* END (gather): operations in the sampled window */
	uint64_t win_ns;	/* END (gather): length of the sampled window */
	uint64_t csum;		/* checksum of the sample: of the source (END), of what landed */
	uint64_t checked;	/* bytes the sample covers */
	uint64_t bad;		/* RESULT: messages whose check failed */
	uint64_t bytes_copied;	/* END: the sender's ps_tp_stats.bytes_copied over the round */
	uint64_t eagain;	/* END: the sender's -EAGAIN count over the round */
	uint64_t doorbells;	/* END: the sender's doorbells over the round */
};
_Static_assert(sizeof(struct bt_ctl) == 184, "bt_ctl is 184 bytes");
_Static_assert(sizeof(struct bt_ctl) <= BT_CTL_SLOT_SIZE, "bt_ctl fits a control slot");

struct bt_opts {
	bool server;
	const char *server_addr; /* client: the positional SERVER_ADDR */
	const char *dev_addr;	 /* -d */
	const char *transport;	 /* "auto", "tcp", "rdma" */
	enum bt_test test;
	uint64_t size;	      /* -s */
	bool all;	      /* -a */
	uint64_t duration_ms; /* -D; 0: iterations mode */
	uint64_t margin_ms;   /* -f */
	bool margin_set;
	uint64_t iters;		 /* -n; 0: the test's default */
	uint32_t depth;		 /* -q */
	uint32_t cq_mod;	 /* -Q */
	uint32_t rows, row_size; /* --rows, --row-size */
	uint32_t sge_per_write;	 /* gather: rows per write_imm; 0: all rows in one */
	bool rows_seq;		 /* gather: --row-order seq */
	uint32_t contig_pairs;	 /* gather: --contig-pairs, rounds of gather + contiguous */
	bool events;		 /* -e: sleep in ps_tp_poll() instead of polling */
	uint64_t table_size;	 /* --table-size */
	const char *json;	 /* --json */
	uint16_t port;		 /* -p */
	uint64_t timeout_ms;	 /* --timeout: the longest any step may wait */
};

/* One round, as both sides see it once START/READY are through. */
struct bt_round {
	enum bt_test test;
	uint64_t size;	   /* bytes per message / per gather */
	uint64_t op_bytes; /* bytes per transport operation (gather: per write_imm chunk) */
	uint64_t stride;   /* distance between slots: size rounded up to 64 */
	uint32_t nslots;
	uint32_t depth, cq_mod;
	uint32_t rows, row_size, chunks; /* gather: chunks write_imms per gather */
	bool rows_seq;			 /* gather: BT_FLAG_ROWS_SEQ */
	uint64_t iters;			 /* operations (gather: write_imms), 0: duration mode */
	uint64_t duration_ms, margin_ms;
	uint64_t seed;
	struct ps_tp_rbuf peer; /* the peer's sink half */
};

struct bt {
	const struct bt_opts *o;
	struct ps_tp_dev *dev;
	struct ps_tp_dev_info info;
	struct ps_tp_loop *loop;
	struct ps_tp_listener *lis;
	struct ps_tp_conn *conn;
	struct ps_mem area; /* BT_AREA_SIZE, registered as area_mr */
	struct ps_tp_mr *area_mr;
	uint8_t *src, *dst, *ctl; /* the halves and the control ring inside area */
	uint32_t ctl_posted, ctl_done;
	struct ps_mem table; /* gather (server): the table, registered as table_mr */
	struct ps_tp_mr *table_mr;
	uint64_t table_len;    /* the size asked for (table.len may be rounded up) */
	struct ps_tp_sge *sgl; /* gather: one gather list (rows entries) */
	uint32_t sgl_cap;
	uint64_t *slot_csum; /* send tests: expected checksum of each peer slot */
	uint64_t *lat;	     /* latency samples (RTT, ns) */
	struct ps_tp_event evs[BT_POLL_BATCH];
	/* Events a loop stopped before (it ended mid-batch): the next bt_poll() returns them. */
	struct ps_tp_event stash[BT_POLL_BATCH];
	int nstash;
	uint32_t gather_chunks; /* gather (client): write_imms per gather, last round */
	bool closing;		/* the run is over: the peer's close is expected */
	uint64_t ctl_marker;	/* its address (even) is the ctx of control sends */
};

/* Operation ctx values: odd, so they never equal &bt.ctl_marker, which is 8-aligned. */
#define BT_OP_CTX(op)	  ((void *)(uintptr_t)(((uint64_t)(op) << 1) | 1))
#define BT_CTX_OP(ctx)	  ((uint64_t)(uintptr_t)(ctx) >> 1)
#define BT_CTX_IS_OP(ctx) (((uintptr_t)(ctx)&1) != 0)

/* What the sender measured. */
struct bt_bw_result {
	uint64_t ops;	  /* operations completed */
	uint64_t win_ops; /* operations in the sampled window (iterations mode: all) */
	uint64_t win_ns;  /* its length */
};

/* What a receiver saw. */
struct bt_sink_result {
	uint64_t ops, bytes, bad, checked;
};

const char *bt_test_name(enum bt_test t);
static inline bool bt_test_is_lat(enum bt_test t)
{
	return t == BT_SEND_LAT || t == BT_WRITE_LAT;
}

/* bench_tp.c: set-up the rounds need. */
/* msg_size of the loops: what the send tests of the options need, at least BT_CTL_MSG_SIZE. */
uint32_t bt_msg_size_for(const struct bt_opts *o);
/* gather (server): allocate, fill and register the table once, on the first gather round. */
int bt_table_ensure(struct bt *b);

/* bench_tp_round.c: polling, control messages and the events every loop handles alike. */
/* ps_tp_poll() into b->evs without waiting, stashed events first. */
int bt_poll(struct bt *b);
/* Keep b->evs[from, n) for the next bt_poll(): the caller stops at event from - 1. */
void bt_stash(struct bt *b, int from, int n);
int bt_ctl_send(struct bt *b, const struct bt_ctl *m);
/* Is @ev a control message? Then copy it to @out, release the buffer, and return 1. */
int bt_ctl_take(struct bt *b, const struct ps_tp_event *ev, struct bt_ctl *out);
/*
 * Handle what any loop may see: completions of control sends, a second connection (closed),
 * the connection closing (PS_EPEER_LOST), a failed completion. Returns 1 if handled, 0 if the
 * caller must look at it, or a negative code that ends the run.
 */
int bt_event_common(struct bt *b, const struct ps_tp_event *ev);
/* Poll once, handling only bt_event_common() events. Returns their count or a negative code. */
int bt_pump(struct bt *b, const char *where);
/* A control message of @type with the tag and version filled in. */
struct bt_ctl bt_ctl_new(enum bt_msg type);
/* Wait for the next control message; events after it stay for the caller (bt_stash). */
int bt_ctl_wait(struct bt *b, struct bt_ctl *out, const char *what);
/*
 * One round: the server answers @start; the client runs size @size into @row (gather: @size
 * bytes in @rows rows, e.g. 1 row for the contiguous baseline).
 */
int bt_srv_round(struct bt *b, const struct bt_ctl *start);
int bt_cli_round(struct bt *b, uint64_t size, uint32_t rows, struct bench_row *row);

/* bench_tp_run.c: the loops. Every wait ends after o->timeout_ms without progress. */
typedef int (*bt_post_fn)(struct bt *b, const struct bt_round *r, uint64_t op, void *ctx);
int bt_bw_send(struct bt *b, const struct bt_round *r, bt_post_fn post, struct bt_bw_result *out);
int bt_sink(struct bt *b, const struct bt_round *r, struct bt_ctl *end, struct bt_sink_result *out);
/* @chk: pongs that failed their check (bad) and bytes checked (it must start zeroed). */
int bt_lat_ping(struct bt *b, const struct bt_round *r, size_t *nsamples,
		struct bt_sink_result *chk);
int bt_lat_pong(struct bt *b, const struct bt_round *r, struct bt_ctl *end,
		struct bt_sink_result *out);
int bt_post_write(struct bt *b, const struct bt_round *r, uint64_t op, void *ctx);
int bt_post_send(struct bt *b, const struct bt_round *r, uint64_t op, void *ctx);
int bt_post_gather(struct bt *b, const struct bt_round *r, uint64_t op, void *ctx);

/* Source slots: fill the slots of a round with the pattern (+ the data tag for send tests). */
void bt_fill_slots(uint8_t *base, const struct bt_round *r, uint64_t seed, uint32_t nslots);
/* Checksum of slots [0, n) of @base, each r->size bytes at their own word offset. */
uint64_t bt_csum_slots(const uint8_t *base, const struct bt_round *r, uint32_t n);
/* What bt_csum_slots() gives for slot @k as bt_fill_slots() fills it with @seed. */
uint64_t bt_slot_expected_csum(const struct bt_round *r, uint64_t seed, uint32_t k);
/* gather: the rows of gather @g (row indexes into the table), and the checksum of the sample. */
uint64_t bt_gather_row(const struct bt_round *r, uint64_t nrows, uint64_t g, uint32_t k);
uint64_t bt_gather_src_csum(const struct bt *b, const struct bt_round *r, uint64_t gathers);

#endif
