/*
 * Client routing: ids and keys to destinations, the stable group-by, and the split into
 * requests (client_route.h).
 */
#include <errno.h>
#include <string.h>

#include <psplus/error.h>

#include "client/client_route.h"

int cli_route_one(const struct cli_shape *sh, const void *keys, size_t i, uint32_t *dest)
{
	const struct ps_placement_entry *e = sh->e;
	const struct ps_placement_part *part;
	uint32_t shard, srv;
	uint64_t h, x;
	int64_t p;

	switch (sh->kind) {
	case PS_VAR_DENSE:
	case PS_VAR_SPARSE:
		x = ((const uint64_t *)keys)[i];
		p = ps_placement_part_index(e, x);
		if (p < 0)
			return PS_EOUT_OF_RANGE;
		part = &e->parts[p];
		srv = part->server;
		if (srv >= sh->nservers)
			return PS_ENOT_READY;
		shard = ps_placement_row_shard(sh->kind == PS_VAR_DENSE ? PS_PLACE_DENSE
									: PS_PLACE_SPARSE,
					       part, x, sh->nshards[srv]);
		break;
	case PS_VAR_HASH64:
	case PS_VAR_HASH128:
		if (sh->kind == PS_VAR_HASH64) {
			h = ps_placement_key_hash(((const uint64_t *)keys)[i]);
		} else {
			const struct ps_key128 *k = &((const struct ps_key128 *)keys)[i];

			h = ps_placement_key_hash128(k->hi, k->lo);
		}
		p = ps_placement_part_index(e, ps_placement_bucket(h));
		if (p < 0)
			return PS_EOUT_OF_RANGE; /* a table whose hash domain is not 65536 */
		srv = e->parts[p].server;
		if (srv >= sh->nservers)
			return PS_ENOT_READY;
		shard = ps_placement_key_shard(h, sh->nshards[srv]);
		break;
	default:
		return -EINVAL;
	}
	*dest = sh->dest0[srv] + shard;
	return 0;
}

int cli_route(const struct cli_shape *sh, const void *keys, const uint32_t *pos, size_t m,
	      uint32_t *dest_of, size_t *bad)
{
	for (size_t k = 0; k < m; k++) {
		size_t i = pos ? pos[k] : k;
		int rc = cli_route_one(sh, keys, i, &dest_of[k]);

		if (rc) {
			*bad = i;
			return rc;
		}
	}
	return 0;
}

void cli_group(const uint32_t *dest_of, const uint32_t *pos, size_t m, uint32_t ndest,
	       uint32_t *start, uint32_t *order)
{
	uint32_t sum = 0, c;

	memset(start, 0, sizeof(*start) * ((size_t)ndest + 1));
	for (size_t k = 0; k < m; k++)
		start[dest_of[k]]++;
	/* Exclusive prefix sums: start[d] is where d's run begins. */
	for (uint32_t d = 0; d < ndest; d++) {
		c = start[d];
		start[d] = sum;
		sum += c;
	}
	start[ndest] = sum;
	/* Placing in input order keeps each run in the caller's order (a stable sort). */
	for (size_t k = 0; k < m; k++)
		order[start[dest_of[k]]++] = pos ? pos[k] : (uint32_t)k;
	/* The pass above advanced every start[d] to the end of its run: shift them back. */
	for (uint32_t d = ndest; d > 0; d--)
		start[d] = start[d - 1];
	start[0] = 0;
}

void cli_var_dests(const struct cli_shape *sh, uint8_t *mark)
{
	const struct ps_placement_entry *e = sh->e;
	bool hash = sh->kind == PS_VAR_HASH64 || sh->kind == PS_VAR_HASH128;

	for (uint32_t j = 0; j < e->nparts; j++) {
		const struct ps_placement_part *p = &e->parts[j];
		uint32_t srv = p->server, T;
		uint64_t b, en;

		if (srv >= sh->nservers)
			continue;
		T = sh->nshards[srv];
		for (uint32_t t = 0; t < T; t++) {
			if (!hash) {
				ps_placement_shard_range(p, t, T, &b, &en);
				if (b >= en)
					continue;
			}
			mark[sh->dest0[srv] + t] = 1;
		}
	}
}

size_t cli_split(const uint32_t *start, uint32_t ndest, const uint32_t *cap, const uint8_t *mark,
		 struct cli_chunk *out)
{
	size_t nc = 0;

	for (uint32_t d = 0; d < ndest; d++) {
		uint32_t b = start[d], e = start[d + 1];

		if (b == e) {
			if (mark && mark[d]) {
				if (out)
					out[nc] = (struct cli_chunk){.dest = d, .first = b, .n = 0};
				nc++;
			}
			continue;
		}
		while (b < e) {
			uint32_t n = e - b < cap[d] ? e - b : cap[d];

			if (out)
				out[nc] = (struct cli_chunk){.dest = d, .first = b, .n = n};
			nc++;
			b += n;
		}
	}
	return nc;
}

size_t cli_split_dense(const struct cli_shape *sh, uint64_t f0, uint64_t f1, const uint32_t *cap,
		       struct cli_chunk *out)
{
	const struct ps_placement_entry *e = sh->e;
	uint64_t w = sh->width, r0, r1;
	size_t nc = 0;
	int64_t p;

	if (!w || f0 >= f1)
		return 0;
	r0 = f0 / w;
	r1 = (f1 + w - 1) / w;
	p = ps_placement_part_index(e, r0);
	if (p < 0)
		return 0;
	for (uint32_t j = (uint32_t)p; j < e->nparts && e->parts[j].begin < r1; j++) {
		const struct ps_placement_part *part = &e->parts[j];
		uint32_t srv = part->server, T;

		if (srv >= sh->nservers)
			continue;
		T = sh->nshards[srv];
		for (uint32_t t = 0; t < T; t++) {
			uint32_t d = sh->dest0[srv] + t;
			uint64_t sb, se, a, z, step = cap[d] / w ? cap[d] / w * w : w;

			ps_placement_shard_range(part, t, T, &sb, &se);
			a = sb * w > f0 ? sb * w : f0;
			z = se * w < f1 ? se * w : f1;
			while (a < z) {
				uint32_t n = (uint32_t)(z - a < step ? z - a : step);

				if (out)
					out[nc] =
						(struct cli_chunk){.dest = d, .n = n, .fbegin = a};
				nc++;
				a += n;
			}
		}
	}
	return nc;
}

bool cli_run_contiguous(const uint32_t *order, uint32_t first, uint32_t n)
{
	for (uint32_t k = 1; k < n; k++)
		if (order[first + k] != order[first] + k)
			return false;
	return n > 0;
}
