/*
 * Registered memory pools.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/mem.h"
#include "transport/tp_pool.h"

struct ps_tp_pool {
	struct ps_mem mem;   /* the region (page-aligned, NUMA-placed) */
	struct ps_tp_mr *mr; /* its registration */
	size_t block_size;
	uint32_t nblocks;
	uint32_t nfree;
	uint32_t *free_stack; /* indices of free blocks; [0, nfree) */
	uint8_t *in_use;      /* one byte per block, to catch double puts */
};

int ps_tp_pool_create(struct ps_tp_dev *dev, const struct ps_tp_pool_opts *opts,
		      struct ps_tp_pool **out)
{
	struct ps_tp_pool *p;
	char err[512];
	size_t bs, total;
	int rc;

	if (!dev || !opts || !out || !opts->block_size || !opts->nblocks)
		return -EINVAL;
	bs = (opts->block_size + 63) & ~(size_t)63;
	if (bs < opts->block_size || bs > SIZE_MAX / opts->nblocks)
		return -EINVAL;
	total = bs * opts->nblocks;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->block_size = bs;
	p->nblocks = opts->nblocks;
	p->free_stack = malloc(sizeof(*p->free_stack) * opts->nblocks);
	p->in_use = calloc(opts->nblocks, 1);
	if (!p->free_stack || !p->in_use) {
		rc = -ENOMEM;
		goto err_free;
	}
	rc = ps_mem_memlock_ensure(total, err, sizeof(err));
	if (rc) {
		ps_log_err("transport", "pool of %zu bytes: %s", total, err);
		goto err_free;
	}
	rc = ps_mem_alloc(total, opts->numa_node, opts->hugepages ? PS_MEM_HUGEPAGES : 0, &p->mem);
	if (rc)
		goto err_free;
	rc = ps_tp_mr_reg(dev, p->mem.addr, p->mem.len, &p->mr);
	if (rc)
		goto err_mem;
	/* Pop order = address order, so a fresh pool hands out blocks front to back. */
	for (uint32_t i = 0; i < p->nblocks; i++)
		p->free_stack[i] = p->nblocks - 1 - i;
	p->nfree = p->nblocks;
	*out = p;
	return 0;

err_mem:
	ps_mem_free(&p->mem);
err_free:
	free(p->in_use);
	free(p->free_stack);
	free(p);
	return rc;
}

void ps_tp_pool_destroy(struct ps_tp_pool *p)
{
	if (!p)
		return;
	if (p->nfree != p->nblocks)
		ps_log_warn("transport", "pool destroyed with %u of %u blocks still in use",
			    p->nblocks - p->nfree, p->nblocks);
	ps_tp_mr_dereg(p->mr);
	ps_mem_free(&p->mem);
	free(p->in_use);
	free(p->free_stack);
	free(p);
}

void *ps_tp_pool_get(struct ps_tp_pool *p)
{
	uint32_t i;

	if (!p->nfree)
		return NULL;
	i = p->free_stack[--p->nfree];
	p->in_use[i] = 1;
	return (char *)p->mem.addr + (size_t)i * p->block_size;
}

int ps_tp_pool_put(struct ps_tp_pool *p, void *blk)
{
	uintptr_t off = (uintptr_t)blk - (uintptr_t)p->mem.addr;
	size_t i;

	if ((uintptr_t)blk < (uintptr_t)p->mem.addr || off % p->block_size)
		return -EINVAL;
	i = off / p->block_size;
	if (i >= p->nblocks)
		return -EINVAL;
	if (!p->in_use[i])
		return -EALREADY;
	p->in_use[i] = 0;
	p->free_stack[p->nfree++] = (uint32_t)i;
	return 0;
}

const struct ps_tp_mr *ps_tp_pool_mr(const struct ps_tp_pool *p)
{
	return p->mr;
}

size_t ps_tp_pool_block_size(const struct ps_tp_pool *p)
{
	return p->block_size;
}

uint32_t ps_tp_pool_avail(const struct ps_tp_pool *p)
{
	return p->nfree;
}
