/*
 * apply-deltas: random streaming deltas (every kind; values only or with slots; hash inserts,
 * deletes of present and absent keys, re-inserts after deletes) written through file://,
 * applied to a checkpoint, must give exactly what applying the same changes in memory gives.
 * Chains (a derived checkpoint picks up after its last delta) and every refusal (unknown
 * variable, wrong width, row out of range, damaged delta, nothing to apply, name taken) leave
 * no checkpoint behind.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "model_io/sm.h"
#include "tests/unit/mio_test_util.h"

#define FRESH_SLOT 0.125f

static char root[512], dd[600], ddurl[700];
static char err[8192];
static struct tmodel base, want;
static uint64_t seed = 2024;

/* What the server's ps_optim_init_slots() would be given; fills every slot with FRESH_SLOT. */
static void fresh_slots(void *arg, const struct ps_optimizer *o, float *row, uint32_t width)
{
	unsigned n = o->kind == PS_OPTIM_SGD					   ? 0
		     : o->kind == PS_OPTIM_MOMENTUM || o->kind == PS_OPTIM_ADAGRAD ? 1
		     : o->kind == PS_OPTIM_CENTERED_RMSPROP			   ? 3
										   : 2;

	(void)arg;
	for (size_t i = width; i < (size_t)width * (1 + n); i++)
		row[i] = FRESH_SLOT;
}

static void copy_model(struct tmodel *dst, const struct tmodel *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->nvars = src->nvars;
	for (size_t i = 0; i < src->nvars; i++) {
		const struct tvar *s = &src->vars[i];
		struct tvar *d = &dst->vars[i];

		*d = *s;
		d->cap = s->n ? s->n : 1;
		d->lo = malloc(d->cap * sizeof(uint64_t));
		d->hi = malloc(d->cap * sizeof(uint64_t));
		d->data = malloc(d->cap * tv_nf(s) * sizeof(float));
		memcpy(d->lo, s->lo, s->n * sizeof(uint64_t));
		memcpy(d->hi, s->hi, s->n * sizeof(uint64_t));
		memcpy(d->data, s->data, s->n * tv_nf(s) * sizeof(float));
	}
}

static int setup(void **state)
{
	struct tvar *v;

	tm_tmpdir(root, sizeof(root), "ckpt-apply");
	snprintf(dd, sizeof(dd), "%s/deltas", root);
	snprintf(ddurl, sizeof(ddurl), "file://%s", dd);
	memset(&base, 0, sizeof(base));
	tm_add_var(&base, "dense", 1, PS_VAR_DENSE, 40, 3, PS_OPTIM_ADAM, &seed);
	tm_add_var(&base, "sparse", 2, PS_VAR_SPARSE, 50, 2, PS_OPTIM_ADAGRAD, &seed);
	v = tm_add_var(&base, "h64", 3, PS_VAR_HASH64, 0, 2, PS_OPTIM_FTRL, &seed);
	tv_add_random_keys(v, 200, &seed);
	v = tm_add_var(&base, "h128", 4, PS_VAR_HASH128, 0, 1, PS_OPTIM_MOMENTUM, &seed);
	tv_add_random_keys(v, 100, &seed);
	tm_add_var(&base, "untouched", 5, PS_VAR_DENSE, 3, 1, PS_OPTIM_SGD, &seed);
	assert_int_equal(tm_save(&base, root, "base", 3), 0);
	copy_model(&want, &base);
	return 0;
}

static int teardown(void **state)
{
	tm_free(&base);
	tm_free(&want);
	tm_rmrf(root);
	return 0;
}

/* In memory: a write of @src (value, and slots if @with_slots) to (lo, hi) of @v. */
static void mem_write(struct tvar *v, uint64_t lo, uint64_t hi, const float *src, bool with_slots)
{
	float row[64];
	long i = tv_find(v, lo, hi);
	size_t w = v->spec.width;

	assert_true(tv_nf(v) <= 64);
	if (i >= 0)
		memcpy(row, v->data + (size_t)i * tv_nf(v), tv_nf(v) * sizeof(float));
	else
		for (size_t j = w; j < tv_nf(v); j++)
			row[j] = FRESH_SLOT;
	memcpy(row, src, (with_slots ? tv_nf(v) : w) * sizeof(float));
	tv_set(v, lo, hi, row);
}

static void rand_rows(float *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = tm_randf(&seed);
}

/* One random delta: written through @w and applied to @want in the same order. */
static void random_delta(struct ps_sm_writer *w)
{
	float vals[64 * 16];
	uint64_t ids[64], dels[64];
	struct ps_key128 k128[64], d128[64];
	bool slots = tm_rand(&seed) & 1;
	struct tvar *v;
	size_t n, nd;

	/* dense: a contiguous range */
	v = &want.vars[0];
	{
		uint64_t b = tm_rand(&seed) % 30, cnt = 1 + tm_rand(&seed) % 10;
		struct ps_sm_dense_model m = {.var_name = "dense",
					      .var_id = 1,
					      .width = 3,
					      .nslots = slots ? v->nslots : 0,
					      .rows_begin = b,
					      .nrows = cnt,
					      .values = vals};
		size_t stride = 3u * (1 + m.nslots);

		rand_rows(vals, cnt * stride);
		assert_int_equal(ps_sm_write_dense(w, &m), 0);
		for (uint64_t r = 0; r < cnt; r++)
			mem_write(v, b + r, 0, vals + r * stride, slots);
	}
	/* sparse: random ids (repeats allowed: the later one wins), and a sparse write to the
	 * dense variable */
	for (int target = 1; target >= 0; target--) {
		v = &want.vars[target];
		struct ps_sm_sparse_model m = {.var_name = v->name,
					       .var_id = v->id,
					       .width = v->spec.width,
					       .nslots = slots ? 0 : v->nslots,
					       .ids = ids,
					       .values = vals};
		size_t stride = v->spec.width * (1u + m.nslots);

		m.n = 1 + tm_rand(&seed) % 20;
		for (size_t i = 0; i < m.n; i++)
			ids[i] = tm_rand(&seed) % v->spec.rows;
		rand_rows(vals, m.n * stride);
		assert_int_equal(ps_sm_write_sparse(w, &m), 0);
		for (size_t i = 0; i < m.n; i++)
			mem_write(v, ids[i], 0, vals + i * stride, !slots);
	}
	/* hash64: delete some present and some absent keys, then write existing and new keys */
	v = &want.vars[2];
	nd = 0;
	for (size_t i = 0; i < 6 && v->n; i++)
		dels[nd++] = v->lo[tm_rand(&seed) % v->n];
	dels[nd++] = tm_rand(&seed); /* absent */
	n = 0;
	for (size_t i = 0; i < 8 && v->n; i++)
		ids[n++] = v->lo[tm_rand(&seed) % v->n];
	ids[n++] = dels[0]; /* deleted and re-created in the same model */
	for (size_t i = 0; i < 5; i++)
		ids[n++] = tm_rand(&seed); /* new */
	{
		struct ps_sm_hash_model m = {.var_name = "h64",
					     .var_id = 3,
					     .width = 2,
					     .nslots = slots ? v->nslots : 0,
					     .key_bits = 64,
					     .n = n,
					     .keys = ids,
					     .values = vals,
					     .ndeleted = nd,
					     .deleted = dels};
		size_t stride = 2u * (1 + m.nslots);

		rand_rows(vals, n * stride);
		assert_int_equal(ps_sm_write_hash(w, &m), 0);
		for (size_t i = 0; i < nd; i++)
			tv_del(v, dels[i], 0);
		for (size_t i = 0; i < n; i++)
			mem_write(v, ids[i], 0, vals + i * stride, slots);
	}
	/* hash128, values only, in two models: rows, then deletes */
	v = &want.vars[3];
	n = 0;
	for (size_t i = 0; i < 5 && v->n; i++) {
		size_t j = tm_rand(&seed) % v->n;

		k128[n++] = (struct ps_key128){v->lo[j], v->hi[j]};
	}
	k128[n++] = (struct ps_key128){tm_rand(&seed), tm_rand(&seed)};
	{
		struct ps_sm_hash_model m = {.var_name = "h128",
					     .var_id = 4,
					     .width = 1,
					     .key_bits = 128,
					     .n = n,
					     .keys128 = k128,
					     .values = vals};

		rand_rows(vals, n);
		assert_int_equal(ps_sm_write_hash(w, &m), 0);
		for (size_t i = 0; i < n; i++)
			mem_write(v, k128[i].lo, k128[i].hi, vals + i, false);
	}
	nd = 0;
	for (size_t i = 0; i < 4 && v->n; i++) {
		size_t j = tm_rand(&seed) % v->n;

		d128[nd++] = (struct ps_key128){v->lo[j], v->hi[j]};
	}
	{
		struct ps_sm_hash_model m = {.var_name = "h128",
					     .var_id = 4,
					     .width = 1,
					     .key_bits = 128,
					     .ndeleted = nd,
					     .deleted128 = d128};

		assert_int_equal(ps_sm_write_hash(w, &m), 0);
		for (size_t i = 0; i < nd; i++)
			tv_del(v, d128[i].lo, d128[i].hi);
	}
}

static void write_deltas(int count)
{
	struct ps_sm_writer *w;

	assert_int_equal(ps_sm_open_writer(ddurl, NULL, &w, err, sizeof(err)), 0);
	for (int i = 0; i < count; i++) {
		random_delta(w);
		assert_int_equal(ps_sm_writer_commit(w), 0);
	}
	ps_sm_writer_close(w);
}

static int apply_v(const char *from, const char *to, uint64_t after, uint64_t upto,
		   struct ps_ckpt_apply_stats *st)
{
	struct ps_ckpt_apply_opts o = {
		.root = root,
		.base = from,
		.delta_dir = dd,
		.new_name = to,
		.after_seq = after,
		.upto_seq = upto,
		.init_slots = fresh_slots,
	};

	return ps_ckpt_apply_deltas(&o, st, err, sizeof(err));
}

static void assert_ckpt_equals(const char *name, const struct tmodel *m)
{
	struct tmodel back = {0};

	assert_int_equal(ps_ckpt_verify(root, name, NULL, NULL, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(tm_load(root, name, &back), 0);
	assert_true(tm_equal(m, &back));
	assert_true(tm_equal(&back, m));
	tm_free(&back);
}

static void test_apply_equals_in_memory(void **state)
{
	struct ps_ckpt_apply_stats st;
	struct ps_ckpt_meta *meta;
	struct tmodel mid;

	write_deltas(5);
	copy_model(&mid, &want);
	assert_int_equal(apply_v("base", "applied", UINT64_MAX, 0, &st), 0);
	assert_int_equal(st.deltas, 5);
	assert_int_equal(st.first_seq, 1);
	assert_int_equal(st.last_seq, 5);
	assert_true(st.rows_replaced > 50);
	assert_true(st.rows_inserted >= 5);
	assert_true(st.keys_deleted > 5);
	assert_true(st.deletes_absent >= 5);
	assert_ckpt_equals("applied", &want);
	assert_ckpt_equals("base", &base); /* the base is only read */
	assert_int_equal(ps_ckpt_meta_load(root, "applied", &meta, err, sizeof(err)), 0);
	assert_string_equal(meta->derived_from, "base");
	assert_int_equal(meta->last_delta_seq, 5);
	assert_int_equal(meta->cluster_version, 0x1234);
	assert_int_equal(meta->vars[0].parts[2].state.step, 102);
	assert_int_equal(meta->placement_len, 4);
	ps_ckpt_meta_free(meta);

	/* A chain: two more deltas on top of "applied" pick up after seq 5. */
	write_deltas(2);
	assert_int_equal(apply_v("latest", "applied2", UINT64_MAX, 0, &st), 0);
	assert_int_equal(st.deltas, 2);
	assert_int_equal(st.first_seq, 6);
	assert_ckpt_equals("applied2", &want);
	/* The same end state straight from the base, and a prefix with upto. */
	assert_int_equal(apply_v("base", "direct", 0, 0, &st), 0);
	assert_int_equal(st.deltas, 7);
	assert_ckpt_equals("direct", &want);
	assert_int_equal(apply_v("base", "prefix", 0, 5, &st), 0);
	assert_ckpt_equals("prefix", &mid);
	tm_free(&mid);

	/* Nothing new to apply; a taken name. */
	assert_int_equal(apply_v("applied2", "none", UINT64_MAX, 0, &st), -ENOENT);
	assert_non_null(strstr(err, "no delta"));
	assert_int_equal(apply_v("base", "applied", 0, 0, &st), -EEXIST);
	assert_int_equal(apply_v("nosuch", "x", 0, 0, &st), -ENOENT);
}

static void assert_no_checkpoint(const char *name)
{
	struct ps_ckpt_entry e;
	char dir[4200];
	struct stat sb;

	assert_int_equal(ps_ckpt_resolve(root, name, &e, NULL, 0), -ENOENT);
	snprintf(dir, sizeof(dir), "%s/%s", root, name);
	assert_int_equal(stat(dir, &sb), -1);
}

static void one_bad_delta(const struct ps_sm_batch *b, int want_rc, const char *msg)
{
	struct ps_ckpt_apply_stats st;

	tm_rmrf(dd);
	assert_int_equal(ps_sm_open_write_any(ddurl, NULL, b, err, sizeof(err)), 0);
	assert_int_equal(apply_v("base", "bad", 0, 0, &st), want_rc);
	assert_non_null(strstr(err, msg));
	assert_non_null(strstr(err, "delta-000001.psd"));
	assert_no_checkpoint("bad");
}

static void test_refusals(void **state)
{
	float v[8] = {0};
	uint64_t id = 3, big = 50;
	struct ps_sm_sparse_model unknown = {
		.var_name = "x", .var_id = 99, .width = 2, .n = 1, .ids = &id, .values = v};
	struct ps_sm_sparse_model renamed = {
		.var_name = "other", .var_id = 2, .width = 2, .n = 1, .ids = &id, .values = v};
	struct ps_sm_sparse_model wide = {.var_id = 2, .width = 3, .n = 1, .ids = &id, .values = v};
	struct ps_sm_sparse_model beyond = {
		.var_id = 2, .width = 2, .n = 1, .ids = &big, .values = v};
	struct ps_sm_hash_model as128 = {.var_id = 3,
					 .width = 2,
					 .key_bits = 128,
					 .ndeleted = 1,
					 .deleted128 = &(struct ps_key128){1, 2}};
	struct ps_sm_batch b = {.nsparse = 1};
	char path[4400];
	struct ps_ckpt_apply_stats st;

	b.sparse = &unknown;
	one_bad_delta(&b, PS_EUNKNOWN_VAR, "variable id 99 ('x') is not in checkpoint 'base'");
	b.sparse = &renamed;
	one_bad_delta(&b, PS_EUNKNOWN_VAR, "variable id 2 ('other')");
	b.sparse = &wide;
	one_bad_delta(&b, PS_ECORRUPT, "has width 2 and 1 slots, a record has 3 and 0");
	b.sparse = &beyond;
	one_bad_delta(&b, PS_EOUT_OF_RANGE, "row 50 of 'sparse', which has 50 rows");
	b = (struct ps_sm_batch){.hash = &as128, .nhash = 1};
	one_bad_delta(&b, PS_ECORRUPT, "for hash64 variable 'h64'");

	/* A damaged delta: refused before anything is written. */
	write_deltas(1);
	snprintf(path, sizeof(path), "%s/delta-000001.psd", dd);
	tm_flip_byte(path, 100, 0x01);
	assert_int_equal(apply_v("base", "bad", 0, 0, &st), PS_ECORRUPT);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "CRC mismatch"));
	assert_no_checkpoint("bad");

	/* A damaged base part: the new checkpoint is not committed and its folder goes. */
	tm_rmrf(dd);
	write_deltas(1);
	{
		struct ps_ckpt_meta *m;

		assert_int_equal(ps_ckpt_meta_load(root, "base", &m, err, sizeof(err)), 0);
		snprintf(path, sizeof(path), "%s/base/%s", root, m->vars[2].parts[1].file);
		ps_ckpt_meta_free(m);
	}
	tm_flip_byte(path, 70, 0x01);
	assert_int_equal(apply_v("base", "bad", 0, 0, &st), PS_ECORRUPT);
	assert_non_null(strstr(err, path));
	assert_no_checkpoint("bad");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_apply_equals_in_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
