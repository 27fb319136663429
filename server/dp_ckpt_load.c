/*
 * Restore, loading side (dp.h, "Checkpoints"): filling the staged parts of one variable from
 * the saved part files that overlap them. dp_ckpt.c stages the variables and switches to them.
 *
 * Where the time goes, and what each step here is for (docs/performance.md, "Checkpoint save
 * and restore"): a restore reads the files (the disk), checks their CRC and copies every row
 * into memory that did not exist before the restore began, beside the live model. The kernel
 * has to allocate and zero that memory page by page (1.1 GB: 270,000 pages), which costs more
 * CPU than the reading and checking together. So:
 *   - the disk starts on every file before anything else and is kept LOAD_READAHEAD ahead of
 *     each loader (POSIX_FADV_WILLNEED, in steps the kernel honours: it cuts one call to its
 *     readahead size), a deeper stream than the kernel's own readahead gives;
 *   - every variable's memory is mapped before any loader starts (ps_dp_stage_create()), and
 *     the commit's pause is acknowledged at once (ps_dp_stage_var());
 *   - a helper thread per variable faults the new parts' pages in ahead of the loader, with
 *     madvise(MADV_POPULATE_WRITE) (ps_mem_populate): a third cheaper than one fault per page
 *     and done while the loader waits for the disk, not in series with it;
 *   - the reader maps each file (mmap) rather than read() it into a buffer, and the loader
 *     copies each row from the page cache straight into the part: one copy of every byte,
 *     not two. Each batch of rows is checksummed right before its rows are copied, so they
 *     come from cache the second time. (The kernel scattering rows into the part itself,
 *     preadv() with one iovec per row, was measured slower: a cost per iovec.)
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "common/log.h"
#include "common/mem.h"
#include "model_io/ckpt.h"
#include "scheduler/placement.h"
#include "server/dp_internal.h"

/* Read buffer of part files that cannot be mapped: large sequential reads, few system calls. */
#define LOAD_IO_BUFFER (4u << 20)
/* How far ahead of each loader the disk is asked to read (from the start, while the memory is
 * mapped, then renewed as rows are consumed). Deeper than the kernel's own window, so the disk
 * never waits for a loader; bounded, so a checkpoint larger than the page cache does not evict
 * its own pages before they are read. */
#define LOAD_READAHEAD (64ull << 20)
/* ... of which the first pass (every variable's memory mapped) asks for this much of each
 * file: enough to start the disk. More would make that pass wait for the disk (asking for
 * 4 x 64 MiB took 60-110 ms here, while the loaders could not start). */
#define LOAD_PREFETCH (8ull << 20)
/* Rows taken from the reader at once: 256 rows of 64 floats are 66 KB, which stay in cache
 * between the CRC pass and the copy. */
#define LOAD_BATCH 256u
/* The prefault helper's step: small enough to notice a stop soon and to hold the process's mmap
 * lock (for reading) only briefly, large enough that the system calls do not count. */
#define PREFAULT_STEP (2u << 20)

/* Hash rows a new shard will receive: the saved rows of its range, spread over the threads. */
static uint64_t hash_estimate(const struct ps_ckpt_var *cv, const size_t *idx, size_t n,
			      uint64_t begin, uint64_t end, uint32_t threads)
{
	double rows = 0;

	for (size_t k = 0; k < n; k++) {
		const struct ps_ckpt_part_desc *d = &cv->parts[idx[k]];
		uint64_t lo = d->begin > begin ? d->begin : begin;
		uint64_t hi = d->end < end ? d->end : end;

		rows += (double)d->rows * (double)(hi - lo) / (double)(d->end - d->begin);
	}
	return (uint64_t)(rows / threads * 1.05) + 16;
}

/* ---- prefault helper ------------------------------------------------------------------------ */

/*
 * The staged parts' row memory, in the order the loader fills it (thread order is id order for
 * dense and sparse parts; hash rows take the first free rows, also in chunk order). A copy of
 * the chunk list, taken before the loader starts: a hash part may add chunks while it loads,
 * but chunks never move, and the parts outlive the helper (joined before the load returns).
 */
struct prefault {
	struct ps_store_chunk *chunks;
	size_t nchunks;
	_Atomic bool stop;
	pthread_t tid;
	bool running;
};

static void *prefault_main(void *arg)
{
	struct prefault *pf = arg;

	for (size_t i = 0; i < pf->nchunks; i++) {
		char *p = pf->chunks[i].addr;
		size_t len = pf->chunks[i].len;

		for (size_t off = 0; off < len; off += PREFAULT_STEP) {
			size_t step = len - off < PREFAULT_STEP ? len - off : PREFAULT_STEP;

			if (atomic_load_explicit(&pf->stop, memory_order_relaxed))
				return NULL;
			/* Without MADV_POPULATE_WRITE (before Linux 5.14) the loader's writes fault
			 * the pages in, as they would without this thread. Writing to the pages
			 * here instead would race with the loader's copies. */
			if (ps_mem_populate(p + off, step))
				return NULL;
		}
	}
	return NULL;
}

/* Start faulting in @vs[0..n)'s parts; a helper that cannot start is no error (slower only). */
static void prefault_start(struct prefault *pf, struct dp_var *const *vs, uint32_t n)
{
	size_t total = 0, k = 0;

	memset(pf, 0, sizeof(*pf));
	for (uint32_t i = 0; i < n; i++)
		if (vs[i]->part)
			total += ps_store_part_chunks(vs[i]->part, NULL, 0);
	if (!total)
		return;
	pf->chunks = calloc(total, sizeof(*pf->chunks));
	if (!pf->chunks)
		return;
	for (uint32_t i = 0; i < n; i++)
		if (vs[i]->part)
			k += ps_store_part_chunks(vs[i]->part, pf->chunks + k, total - k);
	pf->nchunks = k;
	pf->running = !pthread_create(&pf->tid, NULL, prefault_main, pf);
}

/* Stop (if still running) and join the helper: after this nobody touches the parts but us. */
static void prefault_stop(struct prefault *pf)
{
	atomic_store_explicit(&pf->stop, true, memory_order_relaxed);
	if (pf->running)
		pthread_join(pf->tid, NULL);
	pf->running = false;
	free(pf->chunks);
	pf->chunks = NULL;
}

/* ---- loading --------------------------------------------------------------------------------- */

/* The thread whose shard holds @row: for dense and sparse parts, @s (the last one) first, since
 * consecutive rows fall in the same shard. */
static uint32_t row_shard(struct dp_var *const *vs, uint32_t T, const struct ps_placement_part *pp,
			  const struct ps_ckpt_row *row, uint32_t s)
{
	enum ps_place_kind pk;

	switch (vs[0]->kind) {
	case PS_VAR_HASH64:
		return ps_placement_key_shard(ps_placement_key_hash(row->id), T);
	case PS_VAR_HASH128:
		return ps_placement_key_shard(ps_placement_key_hash128(row->key_hi, row->id), T);
	default:
		if (row->id >= vs[s]->begin && row->id < vs[s]->end)
			return s;
		pk = vs[0]->kind == PS_VAR_DENSE ? PS_PLACE_DENSE : PS_PLACE_SPARSE;
		return ps_placement_row_shard(pk, pp, row->id, T);
	}
}

static int load_file(struct ps_dp *dp, struct dp_var **vs, const char *path,
		     const struct ps_ckpt_var *cv, const _Atomic bool *cancel, uint64_t *rows,
		     uint64_t *bytes, char *err, size_t errlen)
{
	struct ps_ckpt_part_reader_opts ro = {.path = path,
					      .filter_begin = vs[0]->part_begin,
					      .filter_end = vs[0]->part_end,
					      .buffer_bytes = LOAD_IO_BUFFER,
					      .map = true,
					      .readahead = LOAD_READAHEAD};
	struct ps_placement_part pp = {.begin = vs[0]->part_begin, .end = vs[0]->part_end};
	struct ps_ckpt_row batch[LOAD_BATCH];
	const struct ps_ckpt_part_hdr *h;
	struct ps_ckpt_part_reader *r;
	uint32_t T = dp->nthreads, nslots = dp_var_nslots(vs[0]), s = 0;
	uint64_t n = 0, next_check = DP_CANCEL_EVERY;
	size_t got;
	int rc;

	rc = ps_ckpt_part_reader_open(&ro, &r, err, errlen);
	if (rc)
		return rc;
	h = ps_ckpt_part_reader_header(r);
	if (h->var_id != cv->id || h->kind != (uint8_t)vs[0]->kind || h->width != vs[0]->width ||
	    h->nslots != nslots) {
		snprintf(err, errlen,
			 "%s: holds variable %" PRIu64 " (kind %u, width %u, %u slots), expected "
			 "%" PRIu64 " (kind %u, width %u, %u slots)",
			 path, h->var_id, h->kind, h->width, h->nslots, cv->id,
			 (unsigned)vs[0]->kind, vs[0]->width, nslots);
		ps_ckpt_part_reader_close(r);
		return PS_ECORRUPT;
	}
	while (!(rc = ps_ckpt_part_reader_next_batch(r, batch, LOAD_BATCH, &got)) && got) {
		for (size_t i = 0; i < got; i++) {
			const struct ps_ckpt_row *row = &batch[i];
			int lrc;

			s = row_shard(vs, T, &pp, row, s);
			lrc = ps_store_load_row(vs[s]->part, row->id, row->key_hi, row->data,
						row->width, row->nslots);
			if (lrc) {
				snprintf(err, errlen, "%s: loading row %" PRIu64 ": %s", path,
					 row->id, ps_strerror(lrc));
				rc = lrc;
				goto done;
			}
		}
		n += got;
		if (n >= next_check) {
			next_check = n + DP_CANCEL_EVERY;
			if (dp_cancelled(cancel)) {
				snprintf(err, errlen, "%s: cancelled", path);
				rc = -ECANCELED;
				goto done;
			}
		}
	}
	/* 0 only once the content CRC matched: the rows loaded are the file's, all of them. */
	if (rc < 0)
		snprintf(err, errlen, "%s", ps_ckpt_part_reader_errmsg(r));
done:
	*rows += n;
	*bytes += ps_ckpt_part_reader_offset(r);
	ps_ckpt_part_reader_close(r);
	return rc;
}

/* The staged shards of @var_id on every thread, into @vs. */
static int staged_shards(struct ps_dp *dp, uint32_t var_id, struct dp_var **vs, char *err,
			 size_t errlen)
{
	for (uint32_t i = 0; i < dp->nthreads; i++) {
		vs[i] = dp_vartab_find(&dp->threads[i].stage, var_id);
		if (!vs[i]) {
			snprintf(err, errlen, "variable %u is not staged on thread %u", var_id, i);
			return PS_EUNKNOWN_VAR;
		}
	}
	return 0;
}

/* Path of saved part @idx of @cv in @dir, or -ENAMETOOLONG with @err filled. */
static int part_path(const char *dir, const struct ps_ckpt_var *cv, size_t idx, char *path,
		     size_t len, char *err, size_t errlen)
{
	if (snprintf(path, len, "%s/%s", dir, cv->parts[idx].file) < (int)len)
		return 0;
	snprintf(err, errlen, "%s/%s: path too long", dir, cv->parts[idx].file);
	return -ENAMETOOLONG;
}

/*
 * Start the disk on the saved parts @idx[0..n) and map the staged shards' row memory, unless
 * that was done already (any shard has its part).
 */
static int create_parts(struct ps_dp *dp, struct dp_var **vs, const char *dir,
			const struct ps_ckpt_var *cv, const size_t *idx, size_t n, char *err,
			size_t errlen)
{
	uint64_t hash_rows = 0;
	char path[4096];
	int rc;

	for (uint32_t i = 0; i < dp->nthreads; i++)
		if (vs[i]->part)
			return 0;
	for (size_t k = 0; k < n; k++)
		if (!part_path(dir, cv, idx[k], path, sizeof(path), NULL, 0))
			ps_ckpt_part_prefetch(path, LOAD_PREFETCH);
	if (vs[0]->kind == PS_VAR_HASH64 || vs[0]->kind == PS_VAR_HASH128)
		hash_rows =
			hash_estimate(cv, idx, n, vs[0]->part_begin, vs[0]->part_end, dp->nthreads);
	for (uint32_t i = 0; i < dp->nthreads; i++) {
		/* Dense and sparse rows all come from the files: no initialiser pass first. */
		rc = dp_var_create_part(vs[i], hash_rows, true);
		if (rc) {
			snprintf(err, errlen,
				 "variable %" PRIu64 " ('%s'): creating its part on thread %u: %s",
				 cv->id, cv->name, i, ps_strerror(rc));
			return rc;
		}
	}
	return 0;
}

int ps_dp_stage_create(struct ps_dp *dp, uint32_t var_id, const char *dir,
		       const struct ps_ckpt_var *cv, char *err, size_t errlen)
{
	struct dp_var **vs = calloc(dp->nthreads, sizeof(*vs));
	size_t *idx = calloc(cv->nparts ? cv->nparts : 1, sizeof(*idx)), n;
	int rc = -ENOMEM;

	err[0] = 0;
	if (vs && idx && !(rc = staged_shards(dp, var_id, vs, err, errlen))) {
		n = ps_ckpt_var_overlaps(cv, vs[0]->part_begin, vs[0]->part_end, idx);
		rc = create_parts(dp, vs, dir, cv, idx, n, err, errlen);
	}
	if (rc && !err[0])
		snprintf(err, errlen, "variable %u: %s", var_id, ps_strerror(rc));
	free(idx);
	free(vs);
	return rc;
}

int ps_dp_stage_load(struct ps_dp *dp, uint32_t var_id, const char *dir,
		     const struct ps_ckpt_var *cv, const _Atomic bool *cancel, uint64_t *rows,
		     uint64_t *bytes, char *err, size_t errlen)
{
	struct prefault pf = {0};
	struct dp_var **vs = NULL;
	size_t *idx = NULL, n;
	uint64_t b, e;
	char path[4096];
	int rc = -ENOMEM;

	err[0] = 0;
	vs = calloc(dp->nthreads, sizeof(*vs));
	idx = calloc(cv->nparts ? cv->nparts : 1, sizeof(*idx));
	if (!vs || !idx)
		goto out;
	rc = staged_shards(dp, var_id, vs, err, errlen);
	if (rc)
		goto out;
	b = vs[0]->part_begin;
	e = vs[0]->part_end;
	n = ps_ckpt_var_overlaps(cv, b, e, idx);
	rc = create_parts(dp, vs, dir, cv, idx, n, err, errlen);
	if (rc)
		goto out;
	prefault_start(&pf, vs, dp->nthreads);
	for (size_t k = 0; k < n; k++) {
		rc = part_path(dir, cv, idx[k], path, sizeof(path), err, errlen);
		if (!rc)
			rc = load_file(dp, vs, path, cv, cancel, rows, bytes, err, errlen);
		if (rc)
			goto out;
	}
	/* Optimizer state: that of the saved parts overlapping each new shard (largest step). */
	for (uint32_t i = 0; i < dp->nthreads; i++) {
		struct ps_ckpt_state cs;
		struct ps_store_state st;

		if (!vs[i]->part)
			continue;
		if (vs[i]->kind == PS_VAR_HASH64 || vs[i]->kind == PS_VAR_HASH128)
			ps_ckpt_var_state_for_range(cv, b, e, &cs);
		else
			ps_ckpt_var_state_for_range(cv, vs[i]->begin, vs[i]->end, &cs);
		ps_store_part_get_state(vs[i]->part, &st);
		st.step = cs.step;
		if (cs.step) {
			st.optim.beta1_power = cs.beta1_power;
			st.optim.beta2_power = cs.beta2_power;
		}
		ps_store_part_set_state(vs[i]->part, &st);
	}
	rc = 0;
out:
	prefault_stop(&pf);
	if (rc && !err[0])
		snprintf(err, errlen, "variable %u: %s", var_id, ps_strerror(rc));
	free(idx);
	free(vs);
	return rc;
}
