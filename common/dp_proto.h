/*
 * The data-plane wire format: requests from workers to server data-path threads, and replies.
 *
 * Carried as transport messages (ps_tp_send) and one-sided writes (ps_tp_write_imm). Fixed
 * headers, little-endian, no protobuf on the hot path. Documented in docs/wire.md, "Data plane".
 *
 * A request is one message: struct ps_dp_req followed by its payload:
 *
 *   op                 payload after the header                     answer
 *   PULL_DENSE         -                                            rows written to dst + imm
 *   PUSH_DENSE         count floats (the part's slice of the grad)  REPLY
 *   PULL_SPARSE        count u64 ids                                rows written to dst + imm
 *   PUSH_SPARSE        count u64 ids, count*width floats            REPLY
 *   PULL_HASH          count keys (u64, or 2 x u64 with KEY128)     rows written to dst + imm
 *   PUSH_HASH          count keys, count*width floats               REPLY
 *   DECLARE            struct ps_dp_declare                         REPLY
 *   DELETE_HASH        count keys (u64, or 2 x u64 with KEY128)     REPLY
 *
 * Pulls: the server writes the rows, in request order, contiguous, into the worker's
 * registered buffer @dst with one ps_tp_write_imm whose immediate value is req_id (zero copy
 * from table memory on rdma: the gather list points at the rows). The immediate arriving IS the
 * success; a failed pull is answered with a REPLY carrying the status instead, and nothing is
 * written.
 *
 * Every request carries the cluster version the worker believes in; a server whose version
 * differs answers PS_ESTALE_VERSION without touching anything, and the worker re-reads the
 * cluster and retries. Every id is validated before any row changes: one bad id fails the
 * whole request (PS_EOUT_OF_RANGE) and changes nothing.
 */
#ifndef PS_COMMON_DP_PROTO_H
#define PS_COMMON_DP_PROTO_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <psplus/types.h>

#define PS_DP_REQ_MAGIC	  0x51445350u /* "PSDQ" as little-endian bytes */
#define PS_DP_REPLY_MAGIC 0x52445350u /* "PSDR" */
#define PS_DP_VERSION	  1

enum ps_dp_op {
	PS_DP_PULL_DENSE = 1,
	PS_DP_PUSH_DENSE = 2,
	PS_DP_PULL_SPARSE = 3,
	PS_DP_PUSH_SPARSE = 4,
	PS_DP_PULL_HASH = 5,
	PS_DP_PUSH_HASH = 6,
	PS_DP_DECLARE = 7,
	PS_DP_DELETE_HASH = 8, /* remove keys (absent ones are skipped); streamed as deletions */
	PS_DP_OP_MAX = 8,
};

enum ps_dp_flags {
	PS_DP_F_KEY128 = 1 << 0,   /* hash keys are 128-bit (struct ps_key128) */
	PS_DP_F_SNAPSHOT = 1 << 1, /* pull: copy rows into a bounce buffer under the owner thread
				    * before writing (no torn rows; see docs/client.md) */
	PS_DP_F_SYNC = 1 << 2,	   /* push: part of synchronous step @step (aggregate, apply when
				    * all num_workers contributed) */
};

/*
 * Request header, 64 bytes. All fields little-endian on the wire: build and read it only
 * through ps_dp_req_encode() / ps_dp_req_decode().
 */
struct ps_dp_req {
	uint32_t magic;		  /*  0: PS_DP_REQ_MAGIC */
	uint8_t version;	  /*  4: PS_DP_VERSION */
	uint8_t op;		  /*  5: enum ps_dp_op */
	uint16_t flags;		  /*  6: enum ps_dp_flags */
	uint32_t req_id;	  /*  8: chosen by the worker; echoed (reply or imm) */
	uint32_t var_id;	  /* 12 */
	uint32_t count;		  /* 16: ids / keys; PUSH_DENSE and PULL_DENSE: floats */
	uint32_t width;		  /* 20: floats per row the worker expects (checked) */
	uint64_t cluster_version; /* 24 */
	uint64_t begin;		  /* 32: dense: first float of this part's slice */
	uint32_t worker_id;	  /* 40 */
	uint32_t step;		  /* 44: the worker's step (sync / bounded staleness) */
	uint64_t dst_addr;	  /* 48: pulls: where the rows go (struct ps_tp_rbuf) */
	uint32_t dst_rkey;	  /* 56 */
	uint32_t dst_len;	  /* 60 */
};
_Static_assert(sizeof(struct ps_dp_req) == 64, "data-plane request header is 64 bytes");

/* Reply, 24 bytes: the answer to pushes and DECLARE, and to failed pulls. */
struct ps_dp_reply {
	uint32_t magic;		  /*  0: PS_DP_REPLY_MAGIC */
	uint8_t version;	  /*  4 */
	uint8_t op;		  /*  5: the request's op */
	uint16_t flags;		  /*  6: 0 */
	uint32_t req_id;	  /*  8 */
	int32_t status;		  /* 12: 0 or a psplus code */
	uint64_t cluster_version; /* 16: the server's current version */
};
_Static_assert(sizeof(struct ps_dp_reply) == 24, "data-plane reply is 24 bytes");

/*
 * DECLARE payload: the spec of a variable and the part this server thread holds. Sent by the
 * worker that declared it, to every server thread holding a part, before any pull or push.
 * Idempotent: the same declaration again is 0; a different one for the same var_id is -EEXIST.
 */
struct ps_dp_declare {
	uint32_t kind;	      /*  0: enum ps_var_kind */
	uint32_t width;	      /*  4 */
	uint64_t rows;	      /*  8 */
	uint64_t part_begin;  /* 16: rows (dense/sparse) or buckets (hash), inclusive */
	uint64_t part_end;    /* 24: exclusive */
	uint32_t shard;	      /* 32: which data-path thread of the server */
	uint32_t nshards;     /* 36: threads of the server */
	uint8_t init[64];     /* 40: struct ps_initializer, encoded by ps_dp_spec_encode() */
	uint8_t optim[64];    /* 104: struct ps_optimizer, encoded */
	float admit_prob;     /* 168 */
	uint32_t num_workers; /* 172: workers of the job (synchronous steps wait for all) */
	uint64_t admit_seed;  /* 176 */
	char name[64];	      /* 184: NUL-terminated */
};
_Static_assert(sizeof(struct ps_dp_declare) == 248, "DECLARE payload is 248 bytes");

/*
 * Encoding. The structs above are host-order views; these functions move them to and from the
 * little-endian wire bytes (common/dp_proto.c). Decoders validate magic, version, op and
 * reserved fields and return PS_EBAD_MESSAGE (or PS_EPROTO_VERSION) for anything else; they
 * never read past @len.
 */
#define PS_DP_REQ_BYTES	    64
#define PS_DP_REPLY_BYTES   24
#define PS_DP_DECLARE_BYTES 248

void ps_dp_req_encode(const struct ps_dp_req *r, uint8_t out[PS_DP_REQ_BYTES]);
int ps_dp_req_decode(const void *buf, size_t len, struct ps_dp_req *r);
void ps_dp_reply_encode(const struct ps_dp_reply *r, uint8_t out[PS_DP_REPLY_BYTES]);
int ps_dp_reply_decode(const void *buf, size_t len, struct ps_dp_reply *r);

/* The DECLARE payload, with the spec's initializer and optimizer in their fixed 64-byte slots. */
void ps_dp_declare_encode(const struct ps_dp_declare *d, uint8_t out[PS_DP_DECLARE_BYTES]);
int ps_dp_declare_decode(const void *buf, size_t len, struct ps_dp_declare *d);
void ps_dp_spec_encode(const struct ps_var_spec *spec, struct ps_dp_declare *d);
int ps_dp_spec_decode(const struct ps_dp_declare *d, struct ps_var_spec *spec);

#endif
