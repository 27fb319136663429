/*
 * The placementer (module ps_placement): which server holds which part of each variable.
 *
 * A pure function of its inputs - variable declarations, per-server budgets, optional live
 * stats and the previous table - so it can be tested and simulated at thousands of servers
 * without a cluster. No I/O, no logging, no globals; every call is thread-safe and reentrant.
 * The algorithm, the load estimates, the refusal rule and the blob format are in
 * docs/placement.md; this header is the reference for callers.
 *
 * Routing domain of a variable:
 *   dense, sparse  rows [0, rows); every part is a contiguous row range on one server.
 *   hash           buckets [0, 65536): a key is hashed (ps_placement_key_hash) and its low 16
 *                  bits pick the bucket; every part is a contiguous bucket range.
 * The parts of a variable are sorted by begin and cover its domain exactly once, and no server
 * holds two parts of one variable (a server's data-path threads keep one part per variable, and
 * clients group a call's ids per (server, shard)).
 *
 * The placement table is the single source of truth for routing and carries the cluster
 * version. Tables are immutable after ps_placement_compute()/ps_placement_decode() return, so
 * any number of threads may read one concurrently; ps_placement_destroy() must not race them.
 */
#ifndef PS_SCHEDULER_PLACEMENT_H
#define PS_SCHEDULER_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <psplus/common.h>

/* Number of hash buckets: fixed forever (checkpoints and the blob depend on it). */
#define PS_PLACEMENT_BUCKETS 65536u
/* Most servers a table can name (server ids are 16-bit in the blob; -sn allows 65536). */
#define PS_PLACEMENT_MAX_SERVERS 65536u
/* Longest variable name, in bytes (no NUL inside). */
#define PS_PLACEMENT_NAME_MAX 255u
/* Default part size, as a fraction of one average server's budget (see part_fraction). */
#define PS_PLACEMENT_PART_FRACTION 0.25
/* Bytes of request + reply headers counted per request in the network estimate. */
#define PS_PLACEMENT_REQ_BYTES 64u
/* Bytes of key, index entry and metadata counted per hash row in the memory estimate. */
#define PS_PLACEMENT_HASH_ROW_BYTES 32u
/* The blob format this build writes and reads. */
#define PS_PLACEMENT_FORMAT 1u

enum ps_place_kind {
	PS_PLACE_DENSE = 0,  /* a tensor of rows x width, usually pulled whole */
	PS_PLACE_SPARSE = 1, /* rows addressed by id in [0, rows) */
	PS_PLACE_HASH = 2,   /* rows addressed by 64- or 128-bit key, created on first touch */
};

/* The three budgets, as indexes into struct ps_placement_load. */
enum ps_placement_dim {
	PS_PLACEMENT_MEM = 0, /* bytes held */
	PS_PLACEMENT_NET = 1, /* NIC bytes/s, both directions together */
	PS_PLACEMENT_QPS = 2, /* requests/s served */
	PS_PLACEMENT_NDIMS = 3,
};

/* An estimated (or measured) load; v[] is indexed by enum ps_placement_dim. */
struct ps_placement_load {
	double v[PS_PLACEMENT_NDIMS];
};

/* One variable declaration. */
struct ps_placement_var {
	const char *name; /* 1..PS_PLACEMENT_NAME_MAX bytes; borrowed, copied */
	uint32_t id;	  /* unique in the input; routing key of the table */
	enum ps_place_kind kind;
	uint64_t rows;		     /* dense/sparse: rows (>= 1); hash: expected keys (>= 0) */
	uint32_t width;		     /* elements per row, >= 1 */
	uint32_t elem_bytes;	     /* bytes per element; 0 means 4 (float32) */
	uint32_t slots;		     /* optimizer slots, each one row-sized array beside the row */
	double rows_read_per_step;   /* rows pulled per job step, all workers together (>= 0) */
	double rows_pushed_per_step; /* rows pushed per job step, all workers together (>= 0) */
	double rows_per_request;     /* batching: rows one request carries to one part (>= 1);
				      * 0 means the job's default */
};

/* One server's budgets. A budget of 0 leaves nothing to place in that dimension. */
struct ps_placement_budget {
	uint64_t mem_bytes;
	uint64_t net_bytes_per_s;
	uint64_t qps;
};

/* What a server reported in its heartbeats (NIC counters, memory in use, requests served). */
struct ps_placement_live {
	bool valid; /* false: nothing measured yet, the entry is ignored */
	uint64_t mem_bytes;
	uint64_t net_bytes_per_s;
	uint64_t qps;
};

struct ps_placement;

/* Everything ps_placement_compute() reads; all pointers are borrowed for the call only. */
struct ps_placement_input {
	const struct ps_placement_var *vars; /* [nvars] */
	uint32_t nvars;
	uint32_t nservers;			   /* 1..PS_PLACEMENT_MAX_SERVERS */
	const struct ps_placement_budget *budgets; /* [nservers] */
	/*
	 * [nservers] or NULL. Measured load the previous table's parts do not explain (measured
	 * minus their estimate, per dimension, never below 0) is background load: it stays on
	 * that server and shrinks what is left for parts.
	 */
	const struct ps_placement_live *live;
	/*
	 * NULL, or the table in force. Parts of variables with the same id, kind and domain stay
	 * on their server while they fit there; the rest is placed afresh.
	 */
	const struct ps_placement *prev;
	double steps_per_s;	 /* job steps per second, the whole job (>= 0, finite) */
	double rows_per_request; /* default batching for variables that give 0 */
	/*
	 * Target part size vs one average server; 0 means PS_PLACEMENT_PART_FRACTION. A dense or
	 * sparse variable is spread over ceil(its size / part_fraction) servers, at most all of
	 * them, so a part is larger when there are fewer servers than that.
	 */
	double part_fraction;
	uint64_t cluster_version; /* copied into the table */
};

/* A part: domain range [begin, end) held by one server. */
struct ps_placement_part {
	uint64_t begin;
	uint64_t end;
	uint32_t server;
	struct ps_placement_load load; /* estimate; all zero in a decoded table */
};

/* A variable in the table. */
struct ps_placement_entry {
	uint32_t id;
	enum ps_place_kind kind;
	const char *name;		 /* NUL-terminated, owned by the table */
	uint64_t domain;		 /* rows, or PS_PLACEMENT_BUCKETS for hash */
	uint32_t nparts;		 /* >= 1 */
	struct ps_placement_part *parts; /* [nparts], sorted by begin, covering [0, domain) */
};

/* The table. Read-only for callers; created by compute or decode, freed by destroy. */
struct ps_placement {
	uint64_t cluster_version;
	uint32_t nservers;
	uint32_t nvars;
	struct ps_placement_entry *vars;	     /* [nvars], in input order */
	uint64_t nparts;			     /* parts of all variables */
	struct ps_placement_load *server_load;	     /* [nservers]: sum of the parts' estimates */
	struct ps_placement_load *server_background; /* [nservers]: from live stats */
	struct ps_placement_load *server_budget;     /* [nservers]: the budgets used */
	/* private */
	uint32_t *by_id;		    /* indexes into vars[], sorted by id */
	struct ps_placement_part *part_mem; /* all parts, one allocation */
	char *name_mem;			    /* all names, one allocation */
};

/**
 * ps_placement_compute() - place every variable under every server's three budgets.
 * @in:     the inputs (borrowed for the call).
 * @out:    receives the new table (caller owns it: ps_placement_destroy()).
 * @err:    if not NULL, receives a one-line reason on failure.
 *
 * Deterministic: the same input gives the same table, and permuting @in->vars only permutes
 * the table's vars[]. Every server holds at most one part of each variable. Hash variables are
 * spread over all servers, one bucket range each, proportional to what each server has left;
 * a dense or sparse variable goes to the least-loaded servers (highest of their three
 * utilisations) with room: ceil(size / part_fraction) of them (at most all), more if they
 * cannot hold it together, one part each, rows in proportion to their room. With @in->prev,
 * parts that still fit stay exactly; a range that cannot stay goes to servers holding no part
 * of its variable, or the placement is refused.
 *
 * Returns 0; -EINVAL for malformed input (message names the field and variable); -ENOMEM;
 * PS_EOVER_BUDGET when the variables do not fit, with a message that names the variable, the
 * budget (memory, network or query) and the need vs what is available. Never over-commits.
 * On failure *out is NULL.
 */
int ps_placement_compute(const struct ps_placement_input *in, struct ps_placement **out, char *err,
			 size_t errlen);

/** ps_placement_destroy() - free a table; NULL is accepted. */
void ps_placement_destroy(struct ps_placement *t);

/**
 * ps_placement_estimate() - the estimated load of @units domain units of @v.
 * @units:         rows (dense/sparse) or buckets (hash) in one part.
 * @steps_per_s:   job steps per second.
 * @rows_per_req:  batching used when @v->rows_per_request is 0.
 *
 * The model of docs/placement.md, "Estimates". Exposed so that callers (rebalancer,
 * simulations, tests) use the same numbers as the placementer. Pure and thread-safe.
 */
struct ps_placement_load ps_placement_estimate(const struct ps_placement_var *v, uint64_t units,
					       double steps_per_s, double rows_per_req);

/** ps_placement_dim_name() - "memory", "network" or "query" (never NULL). */
const char *ps_placement_dim_name(enum ps_placement_dim d);

/* ---- routing ------------------------------------------------------------------------------ */

/**
 * ps_placement_find() - the variable with @id, or NULL. O(log nvars).
 */
const struct ps_placement_entry *ps_placement_find(const struct ps_placement *t, uint32_t id);

/**
 * ps_placement_part_index() - the part of @e holding @x (row or bucket), or -1 when @x is
 * outside [0, domain). O(log nparts).
 */
int64_t ps_placement_part_index(const struct ps_placement_entry *e, uint64_t x);

/**
 * ps_placement_lookup() - route (variable @id, row or bucket @x) to a part and a server.
 * @part, @server: receive the part index and its server (either may be NULL).
 *
 * Returns 0, PS_EUNKNOWN_VAR (no variable @id) or PS_EOUT_OF_RANGE (@x >= domain).
 * O(log nvars + log nparts).
 */
int ps_placement_lookup(const struct ps_placement *t, uint32_t id, uint64_t x, uint32_t *part,
			uint32_t *server);

/**
 * ps_placement_key_hash() - the fixed 64-bit mix of a hash-variable key: ps_mix64() of
 * include/psplus/types.h (splitmix64's finaliser).
 * ps_placement_key_hash128() - the same for 128-bit keys: ps_mix64(lo ^ ps_mix64(hi)).
 *
 * Fixed forever: checkpoints store hash rows by bucket. The bucket is the low 16 bits
 * (ps_placement_bucket, equal to ps_hash_bucket64() of types.h); the shard among a server's
 * threads uses the bits above them (ps_placement_key_shard), so the two are independent.
 */
uint64_t ps_placement_key_hash(uint64_t key);
uint64_t ps_placement_key_hash128(uint64_t hi, uint64_t lo);

/** ps_placement_bucket() - bucket of a key hash: hash mod 65536. */
static inline uint32_t ps_placement_bucket(uint64_t hash)
{
	return (uint32_t)(hash & (PS_PLACEMENT_BUCKETS - 1));
}

/**
 * ps_placement_row_shard() - which of a server's @threads data-path threads owns row @row of a
 * dense or sparse part @p (@row must lie in [p->begin, p->end); @threads >= 1): contiguous
 * blocks, shard = (row - begin) * threads / (end - begin), for both kinds (see the comment in
 * placement_table.c for why). Returns 0 when @threads is 0 (treated as 1).
 */
uint32_t ps_placement_row_shard(enum ps_place_kind kind, const struct ps_placement_part *p,
				uint64_t row, uint32_t threads);

/**
 * ps_placement_shard_range() - the rows [*begin, *end) of part @p that thread @shard of
 * @threads owns under ps_placement_row_shard() (empty when the part has fewer rows than
 * threads).
 */
void ps_placement_shard_range(const struct ps_placement_part *p, uint32_t shard, uint32_t threads,
			      uint64_t *begin, uint64_t *end);

/**
 * ps_placement_key_shard() - which of @threads threads owns a hash row: (hash >> 16) % threads,
 * i.e. bits the bucket does not use. Returns 0 when @threads is 0.
 */
uint32_t ps_placement_key_shard(uint64_t hash, uint32_t threads);

/* ---- serialisation ------------------------------------------------------------------------ */

/**
 * ps_placement_encode() - the table as a little-endian, versioned, CRC32C-checked blob
 * (docs/placement.md, "Blob format"): cluster version, server count, and per variable its id,
 * kind, name, domain and parts. Estimates are not carried.
 * @buf: receives a malloc'ed blob (caller frees); @len its length.
 *
 * Returns 0, -EINVAL (a table the format cannot carry) or -ENOMEM.
 */
int ps_placement_encode(const struct ps_placement *t, uint8_t **buf, size_t *len);

/**
 * ps_placement_decode() - parse and validate a blob into a new table (estimates all zero).
 *
 * Every field is checked: magic, format, reserved bits, counts against the remaining length,
 * kind, name bytes, domain (hash: exactly 65536), parts strictly increasing and ending at the
 * domain, server ids below the server count, unique variable ids, no trailing bytes, CRC32C.
 * Returns 0, PS_EBAD_MESSAGE (with @err naming the field and offset), PS_EPROTO_VERSION (a
 * format this build does not read) or -ENOMEM. On failure *out is NULL.
 */
int ps_placement_decode(const uint8_t *buf, size_t len, struct ps_placement **out, char *err,
			size_t errlen);

#endif
