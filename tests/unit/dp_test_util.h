/*
 * Helpers of the data-plane tests (test_server_dp*.c): a server data plane (server/dp.h) running
 * its threads in this process on DPT_TRANSPORT (tcp; rdma over the fake verbs layer in the
 * *_fake variants), and a raw worker: its own tcp dev and loop,
 * driven from the test thread, that speaks the wire format of common/dp_proto.h with crafted
 * headers (including wrong ones). Every wait is bounded: a helper fails the test instead.
 */
#ifndef PS_TESTS_DP_TEST_UTIL_H
#define PS_TESTS_DP_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dp_proto.h"
#include "server/dp.h"
#include "transport/transport.h"

#ifndef DPT_TRANSPORT
#define DPT_TRANSPORT "tcp" /* test_server_dp*_fake: "rdma" over the fake verbs layer */
#endif
#define DPT_CV	     0x1122334455667788ull /* the cluster version the tests run with */
#define DPT_WAIT_MS  5000
#define DPT_DST_LEN  (8u << 20) /* the worker's registered pull destination */
#define DPT_MSG_MAX  (64u << 10)
#define DPT_NMSG     32 /* request buffers, used round robin */
#define DPT_MAXEV    256
#define DPT_MAXCONNS 8

struct dpt {
	struct ps_dp *dp;
	struct ps_tp_dev *dev; /* the worker's */
	struct ps_tp_loop *loop;
	struct ps_tp_conn *conn[DPT_MAXCONNS]; /* conn[i]: to shard i (dpt_open) */
	uint8_t *dst;			       /* DPT_DST_LEN bytes, registered */
	struct ps_tp_mr *mr;
	uint8_t *msgs; /* DPT_NMSG x (DPT_MSG_MAX + 64), registered */
	struct ps_tp_mr *msgs_mr;
	uint32_t next_msg;
	uint32_t next_req;
	struct ps_tp_event ev[DPT_MAXEV]; /* polled, not yet taken */
	int nev;
};

/*
 * A data plane with @o (NULL: DPT_TRANSPORT on 127.0.0.1, 2 threads, 8 bounce blocks), its cluster
 * version set to DPT_CV, and a worker loop with @client_recv_depth (0: 64) connected to every
 * shard.
 */
void dpt_open(struct dpt *d, const struct ps_dp_opts *o, uint32_t client_recv_depth);
void dpt_close(struct dpt *d);
/* One more worker connection to @shard. */
struct ps_tp_conn *dpt_connect(struct dpt *d, uint32_t shard);

/*
 * Send header @r (magic, version, req_id and - when 0 - cluster_version filled in; pulls get
 * the destination region unless dst_len is set) followed by @p1 and @p2 (either may be NULL).
 * Returns the req_id.
 */
uint32_t dpt_send(struct dpt *d, struct ps_tp_conn *c, struct ps_dp_req *r, const void *p1,
		  size_t l1, const void *p2, size_t l2);
/* Send raw bytes as one message. */
void dpt_send_raw(struct dpt *d, struct ps_tp_conn *c, const void *buf, size_t len);

/*
 * Wait for the answer to @req_id on @c: a reply (returns its status; *cv its cluster version)
 * or a pull's write_imm (returns 0, *wrote the bytes written; -1 if it was a reply). Fails the
 * test after DPT_WAIT_MS or on anything unexpected.
 */
int dpt_wait(struct dpt *d, struct ps_tp_conn *c, uint32_t req_id, int64_t *wrote, uint64_t *cv);
/* Wait for PS_TP_EV_CLOSED on @c (the server closed it); true if it came within @ms. */
bool dpt_wait_closed(struct dpt *d, struct ps_tp_conn *c, int ms);
/* Poll the worker loop once, collecting events. */
void dpt_poll(struct dpt *d, int timeout_ms);

/* ---- requests ------------------------------------------------------------------------------ */

int dpt_declare(struct dpt *d, uint32_t shard, uint32_t var_id, const struct ps_var_spec *spec,
		uint64_t part_begin, uint64_t part_end, uint32_t num_workers);
/* A DECLARE payload for @spec (part fields as given, shard/nshards for @shard of 2). */
void dpt_declare_payload(uint8_t out[PS_DP_DECLARE_BYTES], const struct ps_var_spec *spec,
			 uint64_t part_begin, uint64_t part_end, uint32_t shard, uint32_t nshards,
			 uint32_t num_workers, const char *name);

/* Pull @n rows (@keys: ids, 64-bit keys, or key128 pairs per @op/@flags) into @out. */
int dpt_pull(struct dpt *d, struct ps_tp_conn *c, uint8_t op, uint16_t flags, uint32_t var,
	     const void *keys, uint32_t n, uint32_t width, float *out);
int dpt_pull_dense(struct dpt *d, struct ps_tp_conn *c, uint16_t flags, uint32_t var,
		   uint64_t begin, uint32_t count, uint32_t width, float *out);
int dpt_push(struct dpt *d, struct ps_tp_conn *c, uint8_t op, uint16_t flags, uint32_t var,
	     const void *keys, uint32_t n, uint32_t width, const float *grads, uint32_t worker,
	     uint32_t step);
int dpt_push_dense(struct dpt *d, struct ps_tp_conn *c, uint16_t flags, uint32_t var,
		   uint64_t begin, uint32_t count, uint32_t width, const float *grads,
		   uint32_t worker, uint32_t step);

/* Keys of 64-bit hash variables owned by @shard of @threads (bucket anywhere), from @start. */
void dpt_keys_for_shard(uint64_t *keys, uint32_t n, uint32_t shard, uint32_t threads,
			uint64_t start);

/* A spec: sparse/dense/hash, @width, constant init @c, SGD with learning rate 1. */
struct ps_var_spec dpt_spec(enum ps_var_kind kind, uint64_t rows, uint32_t width, float c);

#endif
