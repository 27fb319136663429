/*
 * Checkpoint part files and metadata: round trips of every kind with slots, the byte layout of
 * the header, every single-byte corruption and every truncation of a small file refused with a
 * message naming the file (by the row reader, the batch reader and the mapped reader alike),
 * the reader's row / bucket filter, the batch and mapped readers agreeing with the row reader at
 * every buffer size, and the writer's refusals.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/crc32c.h"
#include "model_io/ckpt.h"
#include "tests/unit/mio_test_util.h"

static char root[512];
static char err[8192];

static int setup(void **state)
{
	tm_tmpdir(root, sizeof(root), "ckpt-part");
	return 0;
}

static int teardown(void **state)
{
	tm_rmrf(root);
	return 0;
}

static void make_model(struct tmodel *m, uint64_t seed)
{
	struct tvar *v;

	memset(m, 0, sizeof(*m));
	tm_add_var(m, "dense_adam", 1, PS_VAR_DENSE, 37, 5, PS_OPTIM_ADAM, &seed);
	tm_add_var(m, "sparse_ftrl", 2, PS_VAR_SPARSE, 101, 3, PS_OPTIM_FTRL, &seed);
	v = tm_add_var(m, "hash64_adagrad", 3, PS_VAR_HASH64, 0, 4, PS_OPTIM_ADAGRAD, &seed);
	tv_add_random_keys(v, 300, &seed);
	v = tm_add_var(m, "hash128_crms", 4, PS_VAR_HASH128, 0, 2, PS_OPTIM_CENTERED_RMSPROP,
		       &seed);
	tv_add_random_keys(v, 200, &seed);
	tm_add_var(m, "dense_sgd", 5, PS_VAR_DENSE, 1, 7, PS_OPTIM_SGD, &seed);
	v = tm_add_var(m, "hash64_empty", 6, PS_VAR_HASH64, 0, 1, PS_OPTIM_MOMENTUM, &seed);
}

static void test_round_trip_every_kind(void **state)
{
	struct tmodel m, back = {0};
	struct ps_ckpt_meta *meta;
	const struct ps_ckpt_var *v;

	make_model(&m, 1);
	for (unsigned np = 1; np <= 4; np += 3) {
		char name[32];

		snprintf(name, sizeof(name), "rt%u", np);
		assert_int_equal(tm_save(&m, root, name, np), 0);
		assert_int_equal(tm_load(root, name, &back), 0);
		assert_true(tm_equal(&m, &back));
		assert_true(tm_equal(&back, &m));
		tm_free(&back);
	}
	/* The metadata round trip: specs, slots, states, placement, versions. */
	assert_int_equal(ps_ckpt_meta_load(root, "rt4", &meta, err, sizeof(err)), 0);
	assert_string_equal(meta->name, "rt4");
	assert_int_equal(meta->format_version, PS_CKPT_FORMAT_VERSION);
	assert_int_equal(meta->cluster_version, 0x1234);
	assert_int_equal(meta->server_count, 4);
	assert_int_equal(meta->placement_len, 4);
	assert_memory_equal(meta->placement, "blob", 4);
	assert_true(meta->created_unix_ns > 0);
	assert_int_equal(meta->nvars, 6);
	v = ps_ckpt_meta_find_var_name(meta, "dense_adam");
	assert_non_null(v);
	assert_int_equal(v->spec.kind, PS_VAR_DENSE);
	assert_int_equal(v->spec.rows, 37);
	assert_int_equal(v->spec.width, 5);
	assert_int_equal(v->nslots, 2);
	assert_int_equal(v->spec.optim.kind, PS_OPTIM_ADAM);
	assert_true(v->spec.optim.adam.beta2 == 0.999f);
	assert_true(v->spec.init.stddev == 0.01f);
	assert_int_equal(v->nparts, 4);
	assert_int_equal(v->parts[3].state.step, 103);
	assert_true(v->parts[3].state.beta2_power == 0.25 / 4);
	v = ps_ckpt_meta_find_var(meta, 2);
	assert_true(v->spec.optim.ftrl.learning_rate_power == -0.5f);
	v = ps_ckpt_meta_find_var(meta, 4);
	assert_int_equal(v->spec.kind, PS_VAR_HASH128);
	assert_int_equal(v->nslots, 3);
	assert_int_equal(v->parts[0].begin, 0);
	assert_int_equal(v->parts[3].end, PS_HASH_BUCKETS);
	/* dense_sgd has one row: one part whatever was asked. */
	assert_int_equal(ps_ckpt_meta_find_var(meta, 5)->nparts, 1);
	ps_ckpt_meta_free(meta);
	tm_free(&m);
}

static void test_header_layout(void **state)
{
	struct ps_ckpt_part_hdr h =
					{
						.magic = PS_CKPT_PART_MAGIC,
						.format = 1,
						.kind = PS_VAR_HASH128,
						.nslots = 2,
						.width = 0x01020304,
						.var_id = 0x1112131415161718ull,
						.begin = 5,
						.end = 9,
						.rows = 3,
						.content_bytes = 3 * (16 + 4 * 0x01020304ull * 3),
						.content_crc = 0xa1b2c3d4,
					},
				back;
	uint8_t raw[64];

	ps_ckpt_part_header_encode(&h, raw);
	assert_memory_equal(raw, "PSCP", 4);
	assert_int_equal(raw[4], 1);
	assert_int_equal(raw[5], 0);
	assert_int_equal(raw[6], PS_VAR_HASH128);
	assert_int_equal(raw[7], 2);
	assert_int_equal(raw[8], 0x04); /* little-endian */
	assert_int_equal(raw[11], 0x01);
	assert_int_equal(raw[16], 0x18);
	assert_int_equal(raw[23], 0x11);
	assert_int_equal(raw[24], 5);
	assert_int_equal(raw[32], 9);
	assert_int_equal(raw[40], 3);
	assert_int_equal(raw[56], 0xd4);
	assert_int_equal(raw[59], 0xa1);
	assert_int_equal(raw[60] | raw[61] << 8 | raw[62] << 16 | (uint32_t)raw[63] << 24,
			 ps_crc32c(0, raw, 60));
	assert_int_equal(ps_ckpt_part_header_decode(raw, &back, err, sizeof(err)), 0);
	assert_int_equal(back.width, h.width);
	assert_int_equal(back.var_id, h.var_id);
	assert_int_equal(ps_ckpt_record_bytes(PS_VAR_SPARSE, 3, 2), 8 + 36);
	assert_int_equal(ps_ckpt_record_bytes(PS_VAR_HASH128, 3, 0), 16 + 12);
}

/* A small sparse part: 3 rows, width 2, 1 slot: 64 + 3 * (8 + 16) = 136 bytes. */
static void write_small_part(const char *dir, char *path, size_t len)
{
	struct ps_ckpt_part_writer_opts o = {
		.dir = dir,
		.var_id = 9,
		.kind = PS_VAR_SPARSE,
		.width = 2,
		.nslots = 1,
		.begin = 10,
		.end = 13,
	};
	struct ps_ckpt_part_writer *w;
	struct ps_ckpt_part_desc d;

	assert_int_equal(ps_ckpt_part_writer_create(&o, &w, err, sizeof(err)), 0);
	for (uint64_t id = 10; id < 13; id++) {
		float row[4] = {(float)id, 1.5f, -2.0f, 0.25f};

		assert_int_equal(ps_ckpt_part_writer_append(w, id, 0, row), 0);
	}
	assert_int_equal(ps_ckpt_part_writer_finish(w, &d), 0);
	ps_ckpt_part_writer_destroy(w);
	assert_string_equal(d.file, "v9-10-13.psp");
	assert_int_equal(d.size, 136);
	assert_int_equal(d.rows, 3);
	snprintf(path, len, "%s/%s", dir, d.file);
	assert_int_equal(tm_file_size(path), 136);
}

/* Reads every row, one at a time or in batches of @batch; returns the final code (0 = good)
 * and how many rows were handed out. */
static int read_rows(const char *path, bool verify_first, size_t batch, bool map, int *rows)
{
	struct ps_ckpt_part_reader_opts o = {
		.path = path, .verify_first = verify_first, .map = map};
	struct ps_ckpt_part_reader *r;
	struct ps_ckpt_row row[4];
	size_t n;
	int rc;

	*rows = 0;
	rc = ps_ckpt_part_reader_open(&o, &r, err, sizeof(err));
	if (rc)
		return rc;
	if (batch) {
		while (!(rc = ps_ckpt_part_reader_next_batch(r, row, batch, &n)) && n)
			*rows += (int)n;
	} else {
		while ((rc = ps_ckpt_part_reader_next(r, row)) == 1)
			(*rows)++;
	}
	if (rc)
		snprintf(err, sizeof(err), "%s", ps_ckpt_part_reader_errmsg(r));
	/* errors are sticky */
	assert_int_equal(ps_ckpt_part_reader_next(r, row), rc);
	assert_int_equal(ps_ckpt_part_reader_next_batch(r, row, 4, &n), rc);
	ps_ckpt_part_reader_close(r);
	return rc;
}

static int read_all(const char *path, bool verify_first, int *rows)
{
	int brows, rc = read_rows(path, verify_first, 0, false, rows);
	char first[sizeof(err)];

	/* The batch reader and the mapped reader agree: same code, same message, rows handed
	 * out at most as many (verify_first: none either). */
	snprintf(first, sizeof(first), "%s", err);
	for (int mode = 0; mode < 3; mode++) {
		assert_int_equal(read_rows(path, verify_first, mode ? 2 : 0, mode > 0, &brows), rc);
		assert_string_equal(err, first);
		assert_true(rc ? brows <= 3 : brows == *rows);
		if (verify_first && rc)
			assert_int_equal(brows, 0);
	}
	return rc;
}

static void test_every_byte_flip_is_caught(void **state)
{
	char good[4400], bad[4400];
	int rows;

	write_small_part(root, good, sizeof(good));
	assert_int_equal(read_all(good, false, &rows), 0);
	assert_int_equal(rows, 3);
	snprintf(bad, sizeof(bad), "%s/flipped.psp", root);
	for (size_t off = 0; off < 136; off++) {
		tm_copy_file(good, bad, SIZE_MAX);
		tm_flip_byte(bad, off, 0x40);
		assert_int_equal(
			ps_ckpt_part_verify(bad, NULL, 0, 0, 0, 0, NULL, NULL, err, sizeof(err)),
			PS_ECORRUPT);
		assert_non_null(strstr(err, bad));
		if (off < 64) {
			/* The header protects itself: refused at open, before any row. */
			assert_int_equal(read_all(bad, false, &rows), PS_ECORRUPT);
			assert_int_equal(rows, 0);
		} else {
			/* Streaming: rows may come out, but the end is an error, never success. */
			assert_int_equal(read_all(bad, false, &rows), PS_ECORRUPT);
			assert_true(strstr(err, "CRC mismatch") || strstr(err, "id"));
			/* verify_first: nothing is handed out. */
			assert_int_equal(read_all(bad, true, &rows), PS_ECORRUPT);
			assert_int_equal(rows, 0);
			assert_non_null(strstr(err, "content CRC mismatch"));
		}
	}
	tm_copy_file(good, bad, SIZE_MAX);
	tm_flip_byte(bad, 0, 0x01);
	assert_int_equal(read_all(bad, false, &rows), PS_ECORRUPT);
	assert_non_null(strstr(err, "bad magic"));
	tm_copy_file(good, bad, SIZE_MAX);
	tm_flip_byte(bad, 20, 0x01);
	assert_int_equal(read_all(bad, false, &rows), PS_ECORRUPT);
	assert_non_null(strstr(err, "header CRC mismatch"));
}

static void test_every_truncation_is_caught(void **state)
{
	char good[4400], bad[4400], want[64];
	FILE *f;
	int rows;

	write_small_part(root, good, sizeof(good));
	snprintf(bad, sizeof(bad), "%s/short.psp", root);
	for (size_t len = 0; len < 136; len++) {
		tm_copy_file(good, bad, len);
		assert_int_equal(read_all(bad, false, &rows), PS_ECORRUPT);
		assert_int_equal(rows, 0);
		snprintf(want, sizeof(want), "truncated at offset %zu", len);
		assert_non_null(strstr(err, want));
		assert_non_null(strstr(err, bad));
	}
	tm_copy_file(good, bad, SIZE_MAX);
	f = fopen(bad, "ab");
	fputs("xyz", f);
	fclose(f);
	assert_int_equal(read_all(bad, false, &rows), PS_ECORRUPT);
	assert_non_null(strstr(err, "3 trailing bytes"));
	snprintf(bad, sizeof(bad), "%s/missing.psp", root);
	assert_int_equal(read_all(bad, false, &rows), -ENOENT);
	assert_non_null(strstr(err, "missing.psp"));
}

static void test_filters(void **state)
{
	struct tmodel m;
	struct tvar *h;
	char dir[4200], path[4400];
	uint64_t seed = 7;
	struct ps_ckpt_meta *meta;
	const struct ps_ckpt_var *v;
	size_t want = 0, got = 0, idx[8];

	memset(&m, 0, sizeof(m));
	tm_add_var(&m, "d", 1, PS_VAR_DENSE, 20, 2, PS_OPTIM_ADAGRAD, &seed);
	h = tm_add_var(&m, "h", 2, PS_VAR_HASH64, 0, 3, PS_OPTIM_ADAM, &seed);
	tv_add_random_keys(h, 500, &seed);
	assert_int_equal(tm_save(&m, root, "filt", 2), 0);
	assert_int_equal(ps_ckpt_meta_load(root, "filt", &meta, err, sizeof(err)), 0);
	ps_ckpt_dir(root, "filt", dir, sizeof(dir));

	/* A restore onto 3 servers: the new part [7, 13) of "d" reads saved parts 0 and 1. */
	v = ps_ckpt_meta_find_var(meta, 1);
	assert_int_equal(ps_ckpt_var_overlaps(v, 7, 13, idx), 2);
	for (size_t k = 0; k < 2; k++) {
		struct ps_ckpt_part_reader_opts o = {
			.path = path, .filter_begin = 7, .filter_end = 13};
		struct ps_ckpt_part_reader *r;
		struct ps_ckpt_row row;
		int rc;

		snprintf(path, sizeof(path), "%s/%s", dir, v->parts[idx[k]].file);
		assert_int_equal(ps_ckpt_part_reader_open(&o, &r, err, sizeof(err)), 0);
		while ((rc = ps_ckpt_part_reader_next(r, &row)) == 1) {
			assert_true(row.id >= 7 && row.id < 13);
			assert_int_equal(row.nslots, 1);
			assert_memory_equal(row.data, m.vars[0].data + row.id * 4, 16);
			got++;
		}
		assert_int_equal(rc, 0);
		ps_ckpt_part_reader_close(r);
	}
	assert_int_equal(got, 6);

	/* Re-bucketing a hash variable: keys of buckets [1000, 40000) from both saved parts. */
	v = ps_ckpt_meta_find_var(meta, 2);
	for (size_t i = 0; i < h->n; i++)
		want += ps_hash_bucket64(h->lo[i]) >= 1000 && ps_hash_bucket64(h->lo[i]) < 40000;
	got = 0;
	assert_int_equal(ps_ckpt_var_overlaps(v, 1000, 40000, idx), 2);
	for (size_t k = 0; k < v->nparts; k++) {
		struct ps_ckpt_part_reader_opts o = {.path = path,
						     .filter_begin = 1000,
						     .filter_end = 40000,
						     .verify_first = true};
		struct ps_ckpt_part_reader *r;
		struct ps_ckpt_row row;
		int rc;

		snprintf(path, sizeof(path), "%s/%s", dir, v->parts[k].file);
		assert_int_equal(ps_ckpt_part_reader_open(&o, &r, err, sizeof(err)), 0);
		while ((rc = ps_ckpt_part_reader_next(r, &row)) == 1) {
			long j = tv_find(h, row.id, 0);

			assert_true(ps_hash_bucket64(row.id) >= 1000);
			assert_true(ps_hash_bucket64(row.id) < 40000);
			assert_true(j >= 0);
			assert_memory_equal(row.data, h->data + (size_t)j * 9, 36);
			got++;
		}
		assert_int_equal(rc, 0);
		ps_ckpt_part_reader_close(r);
	}
	assert_int_equal(got, want);
	assert_true(want > 100);
	{
		struct ps_ckpt_state st;

		ps_ckpt_var_state_for_range(v, 1000, 40000, &st);
		assert_int_equal(st.step, 101); /* the larger step of parts 0 (100) and 1 (101) */
		ps_ckpt_var_state_for_range(v, 0, 10, &st);
		assert_int_equal(st.step, 100);
	}
	ps_ckpt_meta_free(meta);
	tm_free(&m);
}

/* Reads rows of @path in [fb, fe) three ways: next(), next_batch() of @batch, and the two
 * alternating; all must give the same rows with the same values, and end with 0. */
static void check_batch_path(const char *path, uint64_t fb, uint64_t fe, size_t batch,
			     size_t buffer, bool map)
{
	struct ps_ckpt_part_reader_opts o = {
		.path = path, .filter_begin = fb, .filter_end = fe, .buffer_bytes = buffer};
	struct ps_ckpt_part_reader *a, *b, *c;
	struct ps_ckpt_row ra, rb[8], rc1;
	size_t nfl, n = 0, i = 0;
	bool alt = false;
	int ea, eb, ec;

	assert_true(batch <= 8);
	/* a: the row reader, unmapped (the reference); b, c: mapped or not, with readahead
	 * (advice: it must change nothing but timing). */
	assert_int_equal(ps_ckpt_part_reader_open(&o, &a, err, sizeof(err)), 0);
	o.map = map;
	o.readahead = buffer == 77 ? 100 : buffer * 3;
	ps_ckpt_part_prefetch(path, o.readahead);
	assert_int_equal(ps_ckpt_part_reader_open(&o, &b, err, sizeof(err)), 0);
	assert_int_equal(ps_ckpt_part_reader_open(&o, &c, err, sizeof(err)), 0);
	for (;;) {
		if (i == n) {
			eb = ps_ckpt_part_reader_next_batch(b, rb, batch, &n);
			assert_int_equal(eb, 0);
			i = 0;
		}
		ea = ps_ckpt_part_reader_next(a, &ra);
		if (alt) {
			ec = ps_ckpt_part_reader_next(c, &rc1);
		} else {
			size_t one;

			ec = ps_ckpt_part_reader_next_batch(c, &rc1, 1, &one);
			assert_int_equal(ec, 0);
			ec = (int)one;
		}
		alt = !alt;
		if (ea == 0) {
			assert_int_equal(n, 0);
			assert_int_equal(ec, 0);
			break;
		}
		assert_int_equal(ea, 1);
		assert_int_equal(ec, 1);
		assert_true(i < n);
		nfl = (size_t)ra.width * (1 + ra.nslots);
		assert_int_equal(rb[i].id, ra.id);
		assert_int_equal(rb[i].key_hi, ra.key_hi);
		assert_int_equal(rb[i].width, ra.width);
		assert_int_equal(rb[i].nslots, ra.nslots);
		assert_memory_equal(rb[i].data, ra.data, nfl * sizeof(float));
		assert_int_equal(rc1.id, ra.id);
		assert_memory_equal(rc1.data, ra.data, nfl * sizeof(float));
		assert_true((uintptr_t)rb[i].data % sizeof(float) == 0);
		i++;
	}
	assert_int_equal(ps_ckpt_part_reader_offset(b), ps_ckpt_part_reader_offset(a));
	ps_ckpt_part_reader_close(a);
	ps_ckpt_part_reader_close(b);
	ps_ckpt_part_reader_close(c);
}

static void test_batch_reader(void **state)
{
	static const size_t buffers[] = {1, 77, 300, 0};
	static const size_t batches[] = {1, 3, 8};
	struct ps_ckpt_meta *meta;
	struct tmodel m;
	char dir[4200], path[4400];

	make_model(&m, 3);
	assert_int_equal(tm_save(&m, root, "batch", 2), 0);
	assert_int_equal(ps_ckpt_meta_load(root, "batch", &meta, err, sizeof(err)), 0);
	ps_ckpt_dir(root, "batch", dir, sizeof(dir));
	for (size_t v = 0; v < meta->nvars; v++) {
		const struct ps_ckpt_var *cv = &meta->vars[v];

		for (size_t p = 0; p < cv->nparts; p++) {
			const struct ps_ckpt_part_desc *d = &cv->parts[p];
			uint64_t mid = d->begin + (d->end - d->begin) / 3;

			snprintf(path, sizeof(path), "%s/%s", dir, d->file);
			for (size_t k = 0; k < 5; k++)
				for (size_t j = 0; j < 3; j++) {
					/* Every row, then a filter keeping part of the range;
					 * k == 4: mapped. */
					size_t bb = buffers[k % 4];

					check_batch_path(path, 0, 0, batches[j], bb, k == 4);
					check_batch_path(path, mid, d->end - 1, batches[j], bb,
							 k == 4);
				}
		}
	}
	ps_ckpt_meta_free(meta);
	tm_free(&m);
}

static void test_writer_refusals(void **state)
{
	struct ps_ckpt_part_writer_opts o = {
		.dir = root,
		.var_id = 3,
		.kind = PS_VAR_DENSE,
		.width = 1,
		.begin = 4,
		.end = 6,
	};
	struct ps_ckpt_part_writer *w;
	struct ps_ckpt_part_desc d;
	float row[2] = {1, 2};
	uint64_t key;
	char tmp[4400];

	o.width = 0;
	assert_int_equal(ps_ckpt_part_writer_create(&o, &w, err, sizeof(err)), -EINVAL);
	o.width = 1;
	o.file = "../escape.psp";
	assert_int_equal(ps_ckpt_part_writer_create(&o, &w, err, sizeof(err)), -EINVAL);
	o.file = NULL;
	assert_int_equal(ps_ckpt_part_writer_create(&o, &w, err, sizeof(err)), 0);
	snprintf(tmp, sizeof(tmp), "%s/.v3-4-6.psp.tmp", root);
	assert_int_equal(access(tmp, F_OK), 0);
	assert_int_equal(ps_ckpt_part_writer_append(w, 5, 0, row), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_ckpt_part_writer_append(w, 4, 0, row), 0);
	assert_int_equal(ps_ckpt_part_writer_finish(w, &d), -EINVAL); /* row 5 missing */
	assert_non_null(strstr(ps_ckpt_part_writer_errmsg(w), "1 rows written"));
	ps_ckpt_part_writer_destroy(w);
	assert_int_equal(access(tmp, F_OK), -1); /* an unfinished file does not stay */

	o.kind = PS_VAR_HASH64;
	o.begin = 0;
	o.end = 100;
	assert_int_equal(ps_ckpt_part_writer_create(&o, &w, err, sizeof(err)), 0);
	for (key = 0; ps_hash_bucket64(key) < 100; key++)
		;
	assert_int_equal(ps_ckpt_part_writer_append(w, key, 0, row), PS_EOUT_OF_RANGE);
	assert_non_null(strstr(ps_ckpt_part_writer_errmsg(w), "outside [0, 100)"));
	for (key = 0; ps_hash_bucket64(key) >= 100; key++)
		;
	assert_int_equal(ps_ckpt_part_writer_append(w, key, 1, row), -EINVAL);
	assert_int_equal(ps_ckpt_part_writer_append(w, key, 0, row), 0);
	assert_int_equal(ps_ckpt_part_writer_finish(w, &d), 0);
	assert_int_equal(ps_ckpt_part_writer_finish(w, &d), -EINVAL);
	assert_int_equal(d.rows, 1);
	assert_int_equal(d.size, 64 + 8 + 4);
	ps_ckpt_part_writer_destroy(w);
	ps_ckpt_part_writer_destroy(NULL);
	ps_ckpt_part_reader_close(NULL);
}

static void test_meta_check_and_decode(void **state)
{
	struct ps_var_spec spec = {.kind = PS_VAR_SPARSE, .rows = 10, .width = 2};
	struct ps_ckpt_part_desc a = {.file = "a.psp", .begin = 0, .end = 4, .rows = 4},
				 b = {.file = "b.psp", .begin = 5, .end = 10, .rows = 5};
	struct ps_ckpt_meta *m = ps_ckpt_meta_create("m1"), *back;
	struct ps_ckpt_var *v;
	uint8_t *buf;
	size_t len;

	a.size = 64 + 4 * 16;
	b.size = 64 + 5 * 16;
	spec.optim = ps_optimizer_defaults(PS_OPTIM_SGD);
	v = ps_ckpt_meta_add_var(m, "x", 1, &spec, 0);
	assert_int_equal(ps_ckpt_var_add_part(v, &b), 0);
	assert_int_equal(ps_ckpt_var_add_part(v, &a), 0); /* sorted on insert */
	assert_string_equal(v->parts[0].file, "a.psp");
	assert_int_equal(ps_ckpt_meta_check(m, err, sizeof(err)), PS_ECORRUPT); /* row 4 gap */
	assert_non_null(strstr(err, "covers [5, 10) where [4, ...) is due"));
	v->parts[1].begin = 4;
	v->parts[1].rows = 6;
	v->parts[1].size = 64 + 6 * 16;
	assert_int_equal(ps_ckpt_meta_check(m, err, sizeof(err)), 0);
	assert_int_equal(ps_ckpt_meta_encode(m, &buf, &len), 0);
	assert_memory_equal(buf, "PSCM", 4);
	assert_int_equal(ps_ckpt_meta_decode(buf, len, "mem", &back, err, sizeof(err)), 0);
	assert_int_equal(back->vars[0].nparts, 2);
	assert_int_equal(back->vars[0].parts[1].rows, 6);
	ps_ckpt_meta_free(back);
	for (size_t cut = 0; cut < len; cut++) {
		assert_int_equal(ps_ckpt_meta_decode(buf, cut, "mem", &back, err, sizeof(err)),
				 PS_ECORRUPT);
		assert_null(back);
	}
	for (size_t off = 0; off < len; off++) {
		buf[off] ^= 0x10;
		assert_int_equal(ps_ckpt_meta_decode(buf, len, "mem", &back, err, sizeof(err)),
				 PS_ECORRUPT);
		buf[off] ^= 0x10;
	}
	free(buf);
	ps_ckpt_meta_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip_every_kind, setup, teardown),
		cmocka_unit_test(test_header_layout),
		cmocka_unit_test_setup_teardown(test_every_byte_flip_is_caught, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_truncation_is_caught, setup, teardown),
		cmocka_unit_test_setup_teardown(test_filters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_reader, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_refusals, setup, teardown),
		cmocka_unit_test(test_meta_check_and_decode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
