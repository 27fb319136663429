/*
 * Client routing (module ps_client, pure part): which data-path thread of which server each id
 * or key of a call goes to, the grouping of a call's ids by destination, and the split of each
 * destination's share into requests that fit its message size.
 *
 * No I/O, no allocation: the caller (client_ops.c) owns every array. Kept apart so that
 * tests/unit/test_client_route.c checks it without a network.
 *
 * Destinations: every (server, shard) endpoint has an index in the client's destination table;
 * server s's shard t is dest0[s] + t. The rules are the placement's (scheduler/placement.h):
 *
 *   dense, sparse  row -> the part holding it (ps_placement_part_index) -> its server;
 *                  shard = ps_placement_row_shard(part, row, nshards)
 *   hash64/128     h = ps_placement_key_hash(key) (or _hash128), bucket = h mod 65536 -> part
 *                  -> server; shard = ps_placement_key_shard(h, nshards)
 */
#ifndef PS_CLIENT_ROUTE_H
#define PS_CLIENT_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <psplus/types.h>

#include "scheduler/placement.h"

struct ps_tp_mr;

/* How one variable maps onto the destination table. Everything is borrowed. */
struct cli_shape {
	const struct ps_placement_entry *e; /* the variable's placement */
	enum ps_var_kind kind;
	uint32_t width;		 /* floats per row */
	uint32_t nservers;	 /* entries of dest0[] and nshards[] */
	const uint32_t *dest0;	 /* [nservers]: destination index of each server's shard 0 */
	const uint32_t *nshards; /* [nservers]: data-path threads of each server (>= 1) */
};

/*
 * One request of a call: @n ids (or floats, dense) for destination @dest. Sparse and hash:
 * the ids are order[first .. first+n) (positions in the caller's arrays). Dense: floats
 * [fbegin, fbegin+n) of the variable. The fields below "runtime" belong to client_dp.c.
 */
struct cli_chunk {
	uint32_t dest;
	uint32_t first;
	uint32_t n;
	uint64_t fbegin;
	/* runtime */
	int status;		   /* 0, or the reply's code */
	uint8_t state;		   /* enum cli_chunk_state (client_internal.h) */
	void *dst;		   /* pull: where the rows land (caller's buffer or staging) */
	const struct ps_tp_mr *mr; /* pull: the registration holding dst */
};

/** cli_key_bytes() - bytes of one id or key on the wire: 16 for hash128, else 8. */
static inline uint32_t cli_key_bytes(enum ps_var_kind kind)
{
	return kind == PS_VAR_HASH128 ? 16u : 8u;
}

/**
 * cli_route_one() - the destination of the @i-th id or key of @keys (uint64_t ids or keys, or
 * struct ps_key128). Returns 0, or PS_EOUT_OF_RANGE (a dense/sparse row >= rows).
 */
int cli_route_one(const struct cli_shape *sh, const void *keys, size_t i, uint32_t *dest);

/**
 * cli_route() - destinations of the ids at positions @pos[0..m) (NULL: positions 0..m-1) into
 * @dest_of[0..m). On PS_EOUT_OF_RANGE *@bad receives the offending position and nothing else
 * is meaningful.
 */
int cli_route(const struct cli_shape *sh, const void *keys, const uint32_t *pos, size_t m,
	      uint32_t *dest_of, size_t *bad);

/**
 * cli_group() - stable counting sort of positions by destination.
 * @dest_of: [m] destination of each position (from cli_route()).
 * @pos:     [m] the positions (NULL: 0..m-1).
 * @start:   [ndest + 1] receives where each destination's run starts in @order; start[ndest]
 *           = m.
 * @order:   [m] receives the positions grouped by destination; within a destination in the
 *           order they had in @pos (the caller's order).
 */
void cli_group(const uint32_t *dest_of, const uint32_t *pos, size_t m, uint32_t ndest,
	       uint32_t *start, uint32_t *order);

/**
 * cli_var_dests() - mark (mark[d] = 1) every destination holding rows of the variable: the
 * shards with a non-empty row range of each dense/sparse part, every shard of each hash part's
 * server. @mark has one byte per destination and is not cleared first.
 */
void cli_var_dests(const struct cli_shape *sh, uint8_t *mark);

/**
 * cli_split() - cut each destination's run of @start into requests of at most @cap[d] ids.
 * @mark: NULL, or destinations that get one empty request when they have no ids (synchronous
 *        pushes go to every shard of the variable).
 * @out:  NULL to count only, else receives the requests (grouped by destination, in order).
 *
 * Returns the number of requests. @cap[d] must be >= 1 for every destination used.
 */
size_t cli_split(const uint32_t *start, uint32_t ndest, const uint32_t *cap, const uint8_t *mark,
		 struct cli_chunk *out);

/**
 * cli_split_dense() - requests for floats [f0, f1) of a dense variable (both multiples of the
 * width): per part and shard, the shard's rows cut into pieces of at most @cap[d] floats,
 * rounded down to whole rows but at least one row, in increasing order. Requests hold whole
 * rows so that a server applies each with its row-wise update.
 * @out: NULL to count only. Returns the number of requests.
 */
size_t cli_split_dense(const struct cli_shape *sh, uint64_t f0, uint64_t f1, const uint32_t *cap,
		       struct cli_chunk *out);

/**
 * cli_run_contiguous() - the positions order[first .. first+n) are consecutive and increasing,
 * so the caller's memory for them is one contiguous run (n >= 1).
 */
bool cli_run_contiguous(const uint32_t *order, uint32_t first, uint32_t n);

#endif
