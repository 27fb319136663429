/*
 * Registered memory pools: fixed-size blocks carved from one page-aligned region that is
 * registered with the transport once, at creation. Getting and putting a block is a pointer pop
 * and push on a free stack: no system call, no registration, no lock. A pool is owned by one
 * thread (typically the one that owns the loop using it); blocks must be put back by that
 * thread.
 *
 * Used for receive buffers, bounce buffers, request slots, and the buffers the client library
 * lends to workers.
 */
#ifndef PS_TRANSPORT_TP_POOL_H
#define PS_TRANSPORT_TP_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

struct ps_tp_pool;

struct ps_tp_pool_opts {
	size_t block_size; /* bytes per block; rounded up to 64 (cache line) */
	uint32_t nblocks;  /* number of blocks, > 0 */
	int numa_node;	   /* node for the memory, -1: no binding */
	bool hugepages;	   /* try huge pages (falls back silently) */
};

/**
 * ps_tp_pool_create() - allocate nblocks * block_size bytes and register them on @dev.
 *
 * Checks RLIMIT_MEMLOCK first (ps_mem_memlock_ensure) and logs what to change when it is too
 * low. Returns 0, -EINVAL (zero sizes, or a size that overflows), -ENOMEM, or the
 * registration's error. Nothing is left behind on failure.
 */
int ps_tp_pool_create(struct ps_tp_dev *dev, const struct ps_tp_pool_opts *opts,
		      struct ps_tp_pool **out);

/** ps_tp_pool_destroy() - deregister and free. Every block must be back. Accepts NULL. */
void ps_tp_pool_destroy(struct ps_tp_pool *pool);

/** ps_tp_pool_get() - a free block, or NULL when all are in use (the caller backs off). */
void *ps_tp_pool_get(struct ps_tp_pool *pool);

/**
 * ps_tp_pool_put() - give a block back. Returns 0, or -EINVAL for a pointer that is not the
 * start of one of this pool's blocks, or -EALREADY for a block that is already free (a double
 * put is caught, not corrupting the stack).
 */
int ps_tp_pool_put(struct ps_tp_pool *pool, void *blk);

/** ps_tp_pool_mr() - the registration covering every block (for gather lists and rbufs). */
const struct ps_tp_mr *ps_tp_pool_mr(const struct ps_tp_pool *pool);

/** ps_tp_pool_block_size() / ps_tp_pool_avail() - block size; blocks free right now. */
size_t ps_tp_pool_block_size(const struct ps_tp_pool *pool);
uint32_t ps_tp_pool_avail(const struct ps_tp_pool *pool);

#endif
