/*
 * Optimizers against a reference: for every optimizer (and its variants) and every variable
 * kind (dense, sparse, hash64, hash128), 100 pushes of random gradients (sparse and hash batches
 * repeat ids), compared with a double-precision model written here from TensorFlow's raw-op
 * documentation, value and every slot, to 1e-5 relative. Also hyper-parameter validation,
 * changing hyper-parameters, and Adam's per-part power state.
 *
 * The reference is deliberately written from the formulas, not from server/optim_kernels.c:
 * plain double arithmetic in the textbook form (m = b1 m + (1 - b1) g, not TF's incremental
 * form), so a transcription error in either is caught.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>
#include <psplus/types.h>

#include "server/store.h"

#define STEPS	 100
#define MAXW	 16
#define MAXROWS	 64
#define BATCH	 32
#define HASHPOOL 40
/*
 * Tolerance: |got - want| <= RTOL * max(|want|, rms), rms being the root mean square of that
 * tensor (the values, or one slot) over all rows of the reference. Relative to the element
 * where it is large, relative to the tensor where the element is near zero: an accumulator
 * such as FTRL's linear is a sum of O(1) terms that may cancel, and float32 storage rounds
 * each partial sum at ~6e-8 of the terms, not of the result (TF's float kernels do the same).
 */
#define RTOL 1e-5

struct ocase {
	const char *name;
	struct ps_optimizer o;
};

struct ref_row {
	bool present;
	double v[MAXW];
	double s[PS_OPTIM_MAX_SLOTS][MAXW];
};

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: the test's own generator, independent of the store's. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static double rnd_unit(void)
{
	return (double)(rnd() >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

/* ---- the reference -------------------------------------------------------------------------- */

static void ref_init(const struct ps_optimizer *o, struct ref_row *r, const float *init, uint32_t w)
{
	memset(r, 0, sizeof(*r));
	r->present = true;
	for (uint32_t i = 0; i < w; i++) {
		r->v[i] = init[i];
		switch (o->kind) {
		case PS_OPTIM_ADAGRAD:
			r->s[0][i] = o->adagrad.initial_accumulator_value;
			break;
		case PS_OPTIM_RMSPROP:
		case PS_OPTIM_CENTERED_RMSPROP:
			r->s[0][i] = o->rmsprop.initial_ms;
			break;
		case PS_OPTIM_FTRL:
			r->s[0][i] = o->ftrl.initial_accumulator_value;
			break;
		default:
			break;
		}
	}
}

/* One TF apply of @o to row @r with gradient @g, at push number @t (1-based). */
static void ref_apply(const struct ps_optimizer *o, int t, struct ref_row *r, const double *g,
		      uint32_t w)
{
	for (uint32_t i = 0; i < w; i++) {
		double *var = &r->v[i], *s0 = &r->s[0][i], *s1 = &r->s[1][i], *s2 = &r->s[2][i];
		double gi = g[i];

		switch (o->kind) {
		case PS_OPTIM_SGD:
			*var -= (double)o->sgd.learning_rate * gi;
			break;
		case PS_OPTIM_MOMENTUM: {
			double lr = o->momentum.learning_rate, mu = o->momentum.momentum;

			*s0 = mu * *s0 + gi;
			if (o->momentum.use_nesterov)
				*var -= lr * gi + lr * mu * *s0;
			else
				*var -= lr * *s0;
			break;
		}
		case PS_OPTIM_ADAGRAD:
			*s0 += gi * gi;
			*var -= (double)o->adagrad.learning_rate * gi / sqrt(*s0);
			break;
		case PS_OPTIM_ADAM: {
			double b1 = o->adam.beta1, b2 = o->adam.beta2, eps = o->adam.epsilon;
			double alpha =
				o->adam.learning_rate * sqrt(1.0 - pow(b2, t)) / (1.0 - pow(b1, t));

			*s0 = b1 * *s0 + (1.0 - b1) * gi;
			*s1 = b2 * *s1 + (1.0 - b2) * gi * gi;
			if (o->adam.use_nesterov)
				*var -= alpha * (b1 * *s0 + (1.0 - b1) * gi) / (sqrt(*s1) + eps);
			else
				*var -= alpha * *s0 / (sqrt(*s1) + eps);
			break;
		}
		case PS_OPTIM_RMSPROP:
		case PS_OPTIM_CENTERED_RMSPROP: {
			double rho = o->rmsprop.rho, mu = o->rmsprop.momentum;
			double lr = o->rmsprop.learning_rate, eps = o->rmsprop.epsilon;
			double denom;

			*s0 = rho * *s0 + (1.0 - rho) * gi * gi;
			denom = *s0 + eps;
			if (o->kind == PS_OPTIM_CENTERED_RMSPROP) {
				*s2 = rho * *s2 + (1.0 - rho) * gi;
				denom -= *s2 * *s2;
			}
			*s1 = mu * *s1 + lr * gi / sqrt(denom);
			*var -= *s1;
			break;
		}
		case PS_OPTIM_FTRL: {
			double lr = o->ftrl.learning_rate, p = o->ftrl.learning_rate_power;
			double l1 = o->ftrl.l1, l2 = o->ftrl.l2, shr = o->ftrl.l2_shrinkage;
			double gs = shr > 0 ? gi + 2.0 * shr * *var : gi;
			double acc_new = *s0 + gi * gi;
			double quad;

			*s1 += gs - (pow(acc_new, -p) - pow(*s0, -p)) / lr * *var;
			quad = 1.0 / (pow(acc_new, p) * lr) + 2.0 * l2;
			if (fabs(*s1) > l1)
				*var = ((*s1 < 0 ? -1.0 : 1.0) * l1 - *s1) / quad;
			else
				*var = 0.0;
			*s0 = acc_new;
			break;
		}
		}
	}
}

/* ---- comparing a part with the reference --------------------------------------------------- */

struct cmp {
	const struct ocase *oc;
	enum ps_var_kind kind;
	struct ref_row *ref; /* dense/sparse: by row id; hash: by pool index */
	const uint64_t *pool_lo, *pool_hi;
	unsigned nslots;
	double rms[1 + PS_OPTIM_MAX_SLOTS]; /* value, then each slot */
	size_t seen;
	double worst;
};

static void compute_rms(struct cmp *c, uint32_t w)
{
	for (unsigned s = 0; s <= c->nslots; s++) {
		double sum = 0;
		size_t n = 0;

		for (int i = 0; i < MAXROWS; i++) {
			if (!c->ref[i].present)
				continue;
			for (uint32_t col = 0; col < w; col++, n++) {
				double v = s ? c->ref[i].s[s - 1][col] : c->ref[i].v[col];

				sum += v * v;
			}
		}
		c->rms[s] = n ? sqrt(sum / (double)n) : 0;
	}
}

static int ref_index(const struct cmp *c, const struct ps_store_row *row)
{
	if (c->kind == PS_VAR_DENSE || c->kind == PS_VAR_SPARSE)
		return (int)row->id;
	for (int i = 0; i < HASHPOOL; i++) {
		if (c->pool_lo[i] == row->id &&
		    (c->kind == PS_VAR_HASH64 || c->pool_hi[i] == row->key_hi))
			return i;
	}
	return -1;
}

static void close_enough(struct cmp *c, double got, double want, unsigned which, uint64_t id,
			 uint32_t col)
{
	double err = fabs(got - want) / fmax(fabs(want), c->rms[which]);

	if (err > c->worst)
		c->worst = err;
	if (err > RTOL) {
		print_error("%s kind %d row %llu col %u %s%u: got %.9g want %.9g (err %.3g)\n",
			    c->oc->name, c->kind, (unsigned long long)id, col,
			    which ? "slot" : "value", which ? which - 1 : 0, got, want, err);
		fail();
	}
}

static int cmp_row(void *arg, const struct ps_store_row *row)
{
	struct cmp *c = arg;
	int i = ref_index(c, row);
	const struct ref_row *r;

	assert_true(i >= 0);
	r = &c->ref[i];
	assert_true(r->present);
	assert_int_equal(row->nslots, c->nslots);
	for (uint32_t col = 0; col < row->width; col++) {
		close_enough(c, row->data[col], r->v[col], 0, row->id, col);
		for (unsigned s = 0; s < row->nslots; s++)
			close_enough(c, row->data[(s + 1) * row->width + col], r->s[s][col], s + 1,
				     row->id, col);
	}
	c->seen++;
	return 0;
}

/* ---- one optimizer on one kind --------------------------------------------------------------- */

static void run_kind(const struct ocase *oc, enum ps_var_kind kind)
{
	static struct ref_row ref[MAXROWS];
	uint64_t pool_lo[HASHPOOL], pool_hi[HASHPOOL];
	struct ps_var_spec spec = {
		.kind = kind,
		.rows = kind == PS_VAR_DENSE ? 4 : 50,
		.width = kind == PS_VAR_DENSE ? 16 : 8,
		.init = {.kind = PS_INIT_UNIFORM, .min = -0.5f, .max = 0.5f, .seed = 7},
		.optim = oc->o,
	};
	struct ps_store_part_opts po = {
		.spec = &spec,
		.var_id = 3,
		.begin = kind == PS_VAR_SPARSE ? 10 : 0,
		.end = kind == PS_VAR_SPARSE ? 40 : (kind == PS_VAR_DENSE ? 4 : PS_HASH_BUCKETS),
		.numa_node = -1,
	};
	struct ps_store_scratch_opts so = {.max_batch = BATCH, .max_width = MAXW};
	struct ps_store_scratch *scr;
	struct ps_store_part *p;
	uint32_t w = spec.width;
	struct cmp c = {.oc = oc, .kind = kind, .ref = ref, .pool_lo = pool_lo, .pool_hi = pool_hi};
	size_t expect_rows = 0;

	rng_state = 0x1234567ull + (uint64_t)kind * 1000 + (uint64_t)oc->o.kind;
	memset(ref, 0, sizeof(ref));
	assert_int_equal(ps_store_part_create(&po, &p), 0);
	assert_int_equal(ps_store_scratch_create(&so, &scr), 0);
	c.nslots = ps_optim_slot_count(oc->o.kind);
	for (int i = 0; i < HASHPOOL; i++) {
		pool_lo[i] = rnd();
		pool_hi[i] = kind == PS_VAR_HASH128 ? rnd() : 0;
	}
	if (kind == PS_VAR_DENSE || kind == PS_VAR_SPARSE) {
		for (uint64_t id = po.begin; id < po.end; id++) {
			float init[MAXW];

			ps_store_init_row(&spec.init, po.var_id, id, 0, init, w);
			ref_init(&oc->o, &ref[id], init, w);
		}
		expect_rows = po.end - po.begin;
	}

	for (int t = 1; t <= STEPS; t++) {
		float grads[BATCH * MAXW];
		double sum[MAXROWS][MAXW];
		bool touched[MAXROWS] = {false};
		uint64_t ids[BATCH];
		struct ps_key128 k128[BATCH];
		int idx[BATCH];
		size_t n = kind == PS_VAR_DENSE ? 4 : BATCH;

		memset(sum, 0, sizeof(sum));
		for (size_t i = 0; i < n; i++) {
			if (kind == PS_VAR_DENSE)
				idx[i] = (int)i;
			else if (kind == PS_VAR_SPARSE)
				idx[i] = 10 + (int)(rnd() % 30);
			else
				idx[i] = (int)(rnd() % HASHPOOL);
			ids[i] = kind == PS_VAR_SPARSE ? (uint64_t)idx[i] : pool_lo[idx[i]];
			k128[i] = (struct ps_key128){pool_lo[idx[i]], pool_hi[idx[i]]};
			for (uint32_t col = 0; col < w; col++) {
				grads[i * w + col] = (float)rnd_unit();
				sum[idx[i]][col] += grads[i * w + col];
			}
			touched[idx[i]] = true;
		}
		switch (kind) {
		case PS_VAR_DENSE:
			assert_int_equal(ps_store_dense_push(p, grads, n * w), 0);
			break;
		case PS_VAR_SPARSE:
			assert_int_equal(ps_store_push(p, scr, ids, n, grads, w), 0);
			break;
		case PS_VAR_HASH64:
			assert_int_equal(ps_store_hash_push64(p, scr, ids, n, grads, w), 0);
			break;
		case PS_VAR_HASH128:
			assert_int_equal(ps_store_hash_push128(p, scr, k128, n, grads, w), 0);
			break;
		}
		for (int i = 0; i < MAXROWS; i++) {
			if (!touched[i])
				continue;
			if (!ref[i].present) { /* a hash key created by this push */
				float init[MAXW];

				ps_store_init_row(&spec.init, po.var_id, pool_lo[i], pool_hi[i],
						  init, w);
				ref_init(&oc->o, &ref[i], init, w);
				expect_rows++;
			}
			ref_apply(&oc->o, t, &ref[i], sum[i], w);
		}
	}
	compute_rms(&c, w);
	assert_int_equal(ps_store_foreach(p, cmp_row, &c), 0);
	assert_int_equal(c.seen, expect_rows);
	print_message("    %-18s kind %d: %zu rows, worst relative error %.2e\n", oc->name, kind,
		      c.seen, c.worst);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

static void test_against_reference(void **state)
{
	const struct ocase *oc = *state;

	run_kind(oc, PS_VAR_DENSE);
	run_kind(oc, PS_VAR_SPARSE);
	run_kind(oc, PS_VAR_HASH64);
	run_kind(oc, PS_VAR_HASH128);
}

/* ---- hyper-parameters and state ------------------------------------------------------------ */

static void test_validation(void **state)
{
	struct ps_optimizer o;

	(void)state;
	for (int k = PS_OPTIM_SGD; k <= PS_OPTIM_FTRL; k++) {
		o = ps_optimizer_defaults((enum ps_optim_kind)k);
		assert_int_equal(o.kind, k);
		assert_int_equal(ps_optim_validate(&o), 0);
	}
	o = ps_optimizer_defaults(PS_OPTIM_ADAGRAD);
	o.adagrad.initial_accumulator_value = 0.0f; /* 0 / sqrt(0) on the first update */
	assert_int_equal(ps_optim_validate(&o), -EINVAL);
	o = ps_optimizer_defaults(PS_OPTIM_ADAM);
	o.adam.beta1 = 1.0f;
	assert_int_equal(ps_optim_validate(&o), -EINVAL);
	o = ps_optimizer_defaults(PS_OPTIM_ADAM);
	o.adam.beta2 = NAN;
	assert_int_equal(ps_optim_validate(&o), -EINVAL);
	o = ps_optimizer_defaults(PS_OPTIM_RMSPROP);
	o.rmsprop.rho = 1.5f;
	assert_int_equal(ps_optim_validate(&o), -EINVAL);
	o = ps_optimizer_defaults(PS_OPTIM_FTRL);
	o.ftrl.learning_rate_power = 0.5f;
	assert_int_equal(ps_optim_validate(&o), -EINVAL);
	o.ftrl.learning_rate_power = -0.5f;
	o.ftrl.l1 = -1.0f;
	assert_int_equal(ps_optim_validate(&o), -EINVAL);
	o = ps_optimizer_defaults(PS_OPTIM_SGD);
	o.sgd.learning_rate = INFINITY;
	assert_int_equal(ps_optim_validate(&o), -EINVAL);
	o.kind = (enum ps_optim_kind)99;
	assert_int_equal(ps_optim_validate(&o), -EINVAL);
	assert_int_equal(ps_optim_validate(NULL), -EINVAL);

	assert_int_equal(ps_optim_slot_count(PS_OPTIM_SGD), 0);
	assert_int_equal(ps_optim_slot_count(PS_OPTIM_MOMENTUM), 1);
	assert_int_equal(ps_optim_slot_count(PS_OPTIM_ADAGRAD), 1);
	assert_int_equal(ps_optim_slot_count(PS_OPTIM_ADAM), 2);
	assert_int_equal(ps_optim_slot_count(PS_OPTIM_RMSPROP), 2);
	assert_int_equal(ps_optim_slot_count(PS_OPTIM_CENTERED_RMSPROP), 3);
	assert_int_equal(ps_optim_slot_count(PS_OPTIM_FTRL), 2);
	assert_string_equal(ps_optim_name(PS_OPTIM_CENTERED_RMSPROP), "centered_rmsprop");
}

/* A part refuses a bad optimizer at create, and a change of kind later. */
static void test_part_optimizer(void **state)
{
	struct ps_var_spec spec = {.kind = PS_VAR_SPARSE,
				   .rows = 4,
				   .width = 2,
				   .optim = ps_optimizer_defaults(PS_OPTIM_ADAM)};
	struct ps_store_part_opts po = {.spec = &spec, .begin = 0, .end = 4, .numa_node = -1};
	struct ps_store_scratch_opts so = {.max_batch = 4, .max_width = 2};
	struct ps_store_scratch *scr;
	struct ps_store_part *p;
	struct ps_store_state st, st2;
	struct ps_optimizer o;
	uint64_t id = 1;
	float g[2] = {1.0f, -1.0f};

	(void)state;
	spec.optim.adam.beta2 = 2.0f;
	assert_int_equal(ps_store_part_create(&po, &p), -EINVAL);
	assert_null(p);
	spec.optim = ps_optimizer_defaults(PS_OPTIM_ADAM);
	assert_int_equal(ps_store_part_create(&po, &p), 0);
	assert_int_equal(ps_store_scratch_create(&so, &scr), 0);

	/* TF's Adam: powers start at beta and are multiplied once per apply. */
	ps_store_part_get_state(p, &st);
	assert_int_equal(st.step, 0);
	assert_true(st.optim.beta1_power == (double)0.9f);
	assert_int_equal(ps_store_push(p, scr, &id, 1, g, 2), 0);
	assert_int_equal(ps_store_push(p, scr, &id, 1, g, 2), 0);
	ps_store_part_get_state(p, &st);
	assert_int_equal(st.step, 2);
	assert_true(fabs(st.optim.beta1_power - pow(0.9f, 3)) < 1e-12);
	assert_true(fabs(st.optim.beta2_power - pow(0.999f, 3)) < 1e-12);
	st2 = st;
	st2.step = 40;
	ps_store_part_set_state(p, &st2);
	ps_store_part_get_state(p, &st);
	assert_int_equal(st.step, 40);

	o = ps_optimizer_defaults(PS_OPTIM_SGD);
	assert_int_equal(ps_store_part_set_optimizer(p, &o), -EINVAL);
	o = ps_optimizer_defaults(PS_OPTIM_ADAM);
	o.adam.learning_rate = 0.5f;
	assert_int_equal(ps_store_part_set_optimizer(p, &o), 0);
	o.adam.epsilon = -1.0f;
	assert_int_equal(ps_store_part_set_optimizer(p, &o), -EINVAL);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

#define OPT(kind_, field_, ...)                          \
	{                                                \
		.kind = kind_, .field_ = { __VA_ARGS__ } \
	}

static struct ocase cases[] = {
	{"sgd", OPT(PS_OPTIM_SGD, sgd, .learning_rate = 0.1f)},
	{"momentum", OPT(PS_OPTIM_MOMENTUM, momentum, .learning_rate = 0.05f, .momentum = 0.9f)},
	{"momentum_nesterov", OPT(PS_OPTIM_MOMENTUM, momentum, .learning_rate = 0.05f,
				  .momentum = 0.9f, .use_nesterov = true)},
	{"adagrad",
	 OPT(PS_OPTIM_ADAGRAD, adagrad, .learning_rate = 0.1f, .initial_accumulator_value = 0.1f)},
	{"adam", OPT(PS_OPTIM_ADAM, adam, .learning_rate = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f,
		     .epsilon = 1e-8f)},
	{"adam_nesterov", OPT(PS_OPTIM_ADAM, adam, .learning_rate = 0.01f, .beta1 = 0.8f,
			      .beta2 = 0.99f, .epsilon = 1e-6f, .use_nesterov = true)},
	{"rmsprop", OPT(PS_OPTIM_RMSPROP, rmsprop, .learning_rate = 0.01f, .rho = 0.9f,
			.momentum = 0.5f, .epsilon = 1e-6f, .initial_ms = 1.0f)},
	{"rmsprop_keras", OPT(PS_OPTIM_RMSPROP, rmsprop, .learning_rate = 0.001f, .rho = 0.95f,
			      .epsilon = 1e-3f, .initial_ms = 0.0f)},
	{"centered_rmsprop",
	 OPT(PS_OPTIM_CENTERED_RMSPROP, rmsprop, .learning_rate = 0.01f, .rho = 0.9f,
	     .momentum = 0.3f, .epsilon = 1e-4f, .initial_ms = 1.0f)},
	{"ftrl", OPT(PS_OPTIM_FTRL, ftrl, .learning_rate = 0.1f, .learning_rate_power = -0.5f,
		     .l1 = 0.001f, .l2 = 0.01f, .initial_accumulator_value = 0.1f)},
	{"ftrl_power",
	 OPT(PS_OPTIM_FTRL, ftrl, .learning_rate = 0.05f, .learning_rate_power = -0.3f, .l1 = 0.01f,
	     .initial_accumulator_value = 0.5f)},
	{"ftrl_v2",
	 OPT(PS_OPTIM_FTRL, ftrl, .learning_rate = 0.1f, .learning_rate_power = -0.5f, .l1 = 0.001f,
	     .l2 = 0.01f, .l2_shrinkage = 0.05f, .initial_accumulator_value = 0.1f)},
};

int main(void)
{
	struct CMUnitTest tests[sizeof(cases) / sizeof(cases[0]) + 2];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		tests[n++] = (struct CMUnitTest){cases[i].name, test_against_reference, NULL, NULL,
						 &cases[i]};
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_validation);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_part_optimizer);
	return _cmocka_run_group_tests("optim", tests, n, NULL, NULL);
}
