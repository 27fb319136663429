/*
 * psplus-ctr's math without a cluster (examples/ctr/ctr_{data,model,train}.c): the exact AUC on
 * hand-computed cases (ties included) and against a pairwise count; the logistic loss at
 * extreme logits; the data's determinism by seed and index, its Zipf head and planted weights;
 * batch deduplication; the gradients against central finite differences; and whole training
 * runs through ctr_train.c over an in-memory stand-in for the cluster (a small hash map with
 * TensorFlow's Adagrad and Adam formulas, as the servers apply them), which must reach the
 * planted AUC within 0.02: the model and the data are learnable whatever the cluster does.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/types.h>

#include "ctr_data.h"
#include "ctr_model.h"
#include "ctr_train.h"

/* |a - b| <= tol, with both values in the message (cmocka 1.1 has no double assertion). */
#define assert_near(a, b, tol)                                                            \
	do {                                                                              \
		double a_ = (a), b_ = (b), t_ = (tol);                                    \
		if (!(fabs(a_ - b_) <= t_))                                               \
			fail_msg("%s = %.9g, expected %.9g within %.3g", #a, a_, b_, t_); \
	} while (0)

/* ---- AUC --------------------------------------------------------------------------------- */

static double auc_of(const double *s, const uint8_t *y, size_t n)
{
	double a = -1;

	assert_int_equal(ctr_auc(s, y, n, &a), 0);
	return a;
}

static void test_auc_hand(void **state)
{
	/* The classic example: 3 of the 4 (positive, negative) pairs are ordered right. */
	const double s1[] = {0.1, 0.4, 0.35, 0.8};
	const uint8_t y1[] = {0, 0, 1, 1};
	/* Perfect and reversed. */
	const double s2[] = {1, 2, 3, 4};
	const uint8_t y2[] = {0, 0, 1, 1}, y2r[] = {1, 1, 0, 0};
	/* All scores tied: every pair counts one half. */
	const double s3[] = {7, 7, 7, 7, 7};
	const uint8_t y3[] = {1, 0, 0, 1, 0};
	/* Ties across classes: pos {0.5, 0.9} vs neg {0.5, 0.1}: 0.5 + 1 + 1 + 1 of 4 pairs. */
	const double s4[] = {0.5, 0.5, 0.9, 0.1};
	const uint8_t y4[] = {1, 0, 1, 0};
	/* pos {1, 2} vs neg {1, 2}: 0.5 + 0 + 1 + 0.5 of 4. */
	const double s5[] = {1, 1, 2, 2};
	const uint8_t y5[] = {0, 1, 0, 1};
	/* A tie run inside one class changes nothing: pos {3, 3} vs neg {1, 4}: 1 + 1 + 0 + 0. */
	const double s6[] = {3, 1, 3, 4};
	const uint8_t y6[] = {1, 0, 1, 0};
	double a;

	(void)state;
	assert_near(auc_of(s1, y1, 4), 0.75, 1e-12);
	assert_near(auc_of(s2, y2, 4), 1.0, 1e-12);
	assert_near(auc_of(s2, y2r, 4), 0.0, 1e-12);
	assert_near(auc_of(s3, y3, 5), 0.5, 1e-12);
	assert_near(auc_of(s4, y4, 4), 0.875, 1e-12);
	assert_near(auc_of(s5, y5, 4), 0.5, 1e-12);
	assert_near(auc_of(s6, y6, 4), 0.5, 1e-12);
	/* Undefined with one class, and with nothing. */
	assert_int_equal(ctr_auc(s2, y2, 2, &a), -EDOM);
	assert_int_equal(ctr_auc(s2, y2r, 2, &a), -EDOM);
	assert_int_equal(ctr_auc(s2, y2, 0, &a), -EDOM);
}

/* Random scores on a coarse grid (many ties) against the O(n^2) pair count. */
static void test_auc_pairwise(void **state)
{
	enum { N = 700 };
	double s[N];
	uint8_t y[N];
	uint64_t x = 12345;

	(void)state;
	for (int round = 0; round < 5; round++) {
		double wins = 0, pairs = 0;

		for (int i = 0; i < N; i++) {
			x = ps_mix64(x + 1);
			s[i] = (double)(x % (5 + 20 * round)); /* round 0: five distinct scores */
			y[i] = (ps_mix64(x) % 3 == 0) ^ (s[i] > 3); /* some signal */
		}
		for (int i = 0; i < N; i++)
			for (int j = 0; j < N; j++)
				if (y[i] && !y[j]) {
					pairs++;
					wins += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
				}
		assert_near(auc_of(s, y, N), wins / pairs, 1e-12);
	}
}

static void test_logloss(void **state)
{
	(void)state;
	assert_near(ctr_logloss(0, 1), log(2.0), 1e-12);
	assert_near(ctr_logloss(0, 0), log(2.0), 1e-12);
	assert_near(ctr_logloss(2, 1), log1p(exp(-2.0)), 1e-12);
	assert_near(ctr_logloss(2, 0), log1p(exp(2.0)), 1e-12);
	assert_near(ctr_logloss(-3, 1), log1p(exp(3.0)), 1e-12);
	/* No overflow: a confident wrong answer costs its margin, a right one nothing. */
	assert_near(ctr_logloss(1000, 0), 1000, 1e-9);
	assert_near(ctr_logloss(-1000, 1), 1000, 1e-9);
	assert_true(ctr_logloss(1000, 1) >= 0 && ctr_logloss(1000, 1) < 1e-300);
}

/* ---- data -------------------------------------------------------------------------------- */

static struct ctr_data *data_new(uint64_t seed)
{
	struct ctr_data_opts o = ctr_data_opts_default();
	struct ctr_data *d;

	o.seed = seed;
	assert_int_equal(ctr_data_create(&o, &d), 0);
	return d;
}

static void test_data_determinism(void **state)
{
	struct ctr_data *a = data_new(7), *b = data_new(7), *c = data_new(8);
	struct ctr_example ea, eb, ec;
	uint32_t nf = ctr_data_nfields(a);
	int same_c = 0, same_split = 0;

	(void)state;
	assert_int_equal(nf, 8);
	for (uint64_t i = 0; i < 2000; i++) {
		/* Same seed: the same example, whichever order the indices are generated in. */
		ctr_data_example(a, CTR_TRAIN, i, &ea);
		ctr_data_example(b, CTR_TRAIN, 1999 - i, &eb);
		ctr_data_example(b, CTR_TRAIN, i, &eb);
		assert_memory_equal(ea.keys, eb.keys, nf * sizeof(uint64_t));
		assert_true(ea.true_logit == eb.true_logit);
		assert_int_equal(ea.label, eb.label);
		assert_true(ea.label <= 1);
		/* Another seed, or the other split, gives other examples. */
		ctr_data_example(c, CTR_TRAIN, i, &ec);
		same_c += !memcmp(ea.keys, ec.keys, nf * sizeof(uint64_t));
		ctr_data_example(a, CTR_TEST, i, &eb);
		same_split +=
			!memcmp(ea.keys, eb.keys, nf * sizeof(uint64_t)) && ea.label == eb.label;
	}
	/* Zipf heads make whole-example repeats possible, but rare. */
	assert_true(same_c < 20);
	assert_true(same_split < 20);
	/* The same (field, id) under another seed is another key; the weight follows the key. */
	assert_true(ctr_data_key(a, 0, 0) != ctr_data_key(c, 0, 0));
	assert_true(ctr_data_key(a, 0, 5) == ctr_data_key(b, 0, 5));
	assert_true(ctr_data_weight(a, 42) == ctr_data_weight(b, 42));
	ctr_data_destroy(a);
	ctr_data_destroy(b);
	ctr_data_destroy(c);
}

static void test_data_keys_weights(void **state)
{
	struct ctr_data *d = data_new(1);
	struct ctr_data_opts o = ctr_data_opts_default();
	double sum = 0, sum2 = 0;
	enum { NK = 20000 };

	(void)state;
	/* Distinct (field, id) pairs never share a key: the field is mixed in. */
	for (uint32_t id = 0; id < 1000; id++)
		for (uint32_t f = 1; f < 8; f++)
			assert_true(ctr_data_key(d, 0, id) != ctr_data_key(d, f, id));
	/* Planted weights: normal(0, sigma) over keys. */
	for (uint32_t id = 0; id < NK; id++) {
		double w = ctr_data_weight(d, ctr_data_key(d, 6, id));

		sum += w;
		sum2 += w * w;
	}
	assert_near(sum / NK, 0.0, 4 * o.sigma / sqrt(NK));
	assert_near(sqrt(sum2 / NK), o.sigma, 0.02 * o.sigma);
	ctr_data_destroy(d);
}

static void test_data_distribution(void **state)
{
	struct ctr_data *d = data_new(3);
	struct ctr_data_opts o = ctr_data_opts_default();
	struct ctr_example ex;
	double zeta = 0, p0, logit_sum = 0, pred = 0;
	uint64_t head = ctr_data_key(d, 2, 0), second = ctr_data_key(d, 2, 1);
	uint64_t n_head = 0, n_second = 0, clicks = 0;
	enum { N = 100000 };

	(void)state;
	for (uint32_t r = 0; r < o.vocab[2]; r++)
		zeta += pow(r + 1.0, -o.zipf_s);
	p0 = 1.0 / zeta;
	for (uint64_t i = 0; i < N; i++) {
		ctr_data_example(d, CTR_TRAIN, i, &ex);
		n_head += ex.keys[2] == head;
		n_second += ex.keys[2] == second;
		clicks += ex.label;
		logit_sum += ex.true_logit;
		pred += 1.0 / (1.0 + exp(-ex.true_logit));
		/* The logit is the bias plus the keys' planted weights. */
		if (i < 100) {
			double z = o.bias;

			for (uint32_t f = 0; f < 8; f++)
				z += ctr_data_weight(d, ex.keys[f]);
			assert_near(ex.true_logit, z, 1e-9);
		}
	}
	/* Zipf: rank 0 has probability 1 / zeta(s, V), rank 1 2^-s of that (5 sigma bounds). */
	assert_near((double)n_head / N, p0, 5 * sqrt(p0 / N));
	assert_near((double)n_second / N, p0 * pow(2, -o.zipf_s), 5 * sqrt(p0 / N));
	/* Labels follow sigmoid(logit): the click count is the sum of the probabilities. */
	assert_near((double)clicks, pred, 5 * sqrt(pred));
	ctr_data_destroy(d);
}

static void test_data_bad_opts(void **state)
{
	struct ctr_data_opts o = ctr_data_opts_default();
	struct ctr_data *d = (struct ctr_data *)&o;

	(void)state;
	o.nfields = 0;
	assert_int_equal(ctr_data_create(&o, &d), -EINVAL);
	assert_null(d);
	o = ctr_data_opts_default();
	o.nfields = CTR_MAX_FIELDS + 1;
	assert_int_equal(ctr_data_create(&o, &d), -EINVAL);
	o = ctr_data_opts_default();
	o.vocab[3] = 0;
	assert_int_equal(ctr_data_create(&o, &d), -EINVAL);
	o = ctr_data_opts_default();
	o.sigma = -1;
	assert_int_equal(ctr_data_create(&o, &d), -EINVAL);
	o = ctr_data_opts_default();
	o.zipf_s = NAN;
	assert_int_equal(ctr_data_create(&o, &d), -EINVAL);
	ctr_data_destroy(NULL);
}

/* ---- batches and gradients --------------------------------------------------------------- */

static void test_batch_dedup(void **state)
{
	struct ctr_batch *b;
	struct ctr_example ex = {0};

	(void)state;
	assert_int_equal(ctr_batch_create(0, 3, &b), -EINVAL);
	assert_int_equal(ctr_batch_create(4, 0, &b), -EINVAL);
	assert_int_equal(ctr_batch_create(4, 3, &b), 0);
	for (int round = 0; round < 2; round++) {
		ctr_batch_reset(b);
		/* keys {10,20,30}, {10,20,40}, {50,50,10}: five distinct, in first-seen order. */
		ex.keys[0] = 10, ex.keys[1] = 20, ex.keys[2] = 30, ex.label = 1;
		ctr_batch_add(b, &ex);
		ex.keys[2] = 40, ex.label = 0;
		ctr_batch_add(b, &ex);
		ex.keys[0] = 50, ex.keys[1] = 50, ex.keys[2] = 10, ex.true_logit = -2;
		ctr_batch_add(b, &ex);
		assert_int_equal(b->n, 3);
		assert_int_equal(b->nuniq, 5);
		assert_true(b->keys[0] == 10 && b->keys[1] == 20 && b->keys[2] == 30 &&
			    b->keys[3] == 40 && b->keys[4] == 50);
		assert_int_equal(b->slot[5], 3);
		assert_int_equal(b->slot[6], 4);
		assert_int_equal(b->slot[7], 4);
		assert_int_equal(b->slot[8], 0);
		assert_int_equal(b->labels[0], 1);
		assert_int_equal(b->labels[2], 0);
		assert_true(b->true_logit[2] == -2);
	}
	ctr_batch_destroy(b);
	ctr_batch_destroy(NULL);
}

static float frand(uint64_t *x, float scale)
{
	*x = ps_mix64(*x + 0x9e3779b97f4a7c15ull);
	return scale * (float)((double)(*x >> 11) * 0x1.0p-53 * 2 - 1);
}

static double batch_loss(const struct ctr_batch *b, uint32_t width, const float *rows,
			 const float *dense, float *logits)
{
	double l = 0;

	ctr_model_forward(b, width, rows, dense, logits);
	for (uint32_t i = 0; i < b->n; i++)
		l += ctr_logloss(logits[i], b->labels[i]);
	return l;
}

/*
 * Every gradient of ctr_model_backward() against (L(p + h) - L(p - h)) / 2h, on a batch whose
 * keys repeat across examples and fields (so the per-key sums are exercised).
 */
static void test_gradient_check(void **state)
{
	enum { NB = 24, NF = 3, W = 4 };
	const uint32_t dw = ctr_model_dense_width(NF, W);
	struct ctr_batch *b;
	struct ctr_example ex = {0};
	float rows[NB * NF * W], dense[NF * W + 1], grow[NB * NF * W], gdense[NF * W + 1];
	float logits[NB];
	uint64_t x = 99;
	double loss, loss0;
	const float h = 1e-2f;

	(void)state;
	assert_int_equal(ctr_batch_create(NB, NF, &b), 0);
	ctr_batch_reset(b);
	for (uint32_t i = 0; i < NB; i++) {
		for (uint32_t f = 0; f < NF; f++)
			ex.keys[f] = ps_mix64(x + i * NF + f) % 7; /* 7 keys for 72 slots */
		ex.label = ps_mix64(x + 1000 + i) & 1;
		ctr_batch_add(b, &ex);
	}
	assert_true(b->nuniq <= 7);
	for (uint32_t j = 0; j < b->nuniq * W; j++)
		rows[j] = frand(&x, 1.0f);
	for (uint32_t j = 0; j < dw; j++)
		dense[j] = frand(&x, 1.0f);
	ctr_model_forward(b, W, rows, dense, logits);
	loss = ctr_model_backward(b, W, rows, dense, logits, grow, gdense);
	loss0 = batch_loss(b, W, rows, dense, logits);
	assert_near(loss, loss0, 1e-9);
	/* The loss is quadratic-ish at this scale: the central difference is accurate to O(h^2). */
	for (uint32_t j = 0; j < b->nuniq * W + dw; j++) {
		float *p = j < b->nuniq * W ? &rows[j] : &dense[j - b->nuniq * W];
		float g = j < b->nuniq * W ? grow[j] : gdense[j - b->nuniq * W];
		float keep = *p;
		double up, down, fd;

		*p = keep + h;
		up = batch_loss(b, W, rows, dense, logits);
		*p = keep - h;
		down = batch_loss(b, W, rows, dense, logits);
		*p = keep;
		fd = (up - down) / (2.0 * (double)h);
		if (fabs(fd - g) > 2e-3 + 1e-2 * fabs(fd))
			fail_msg("parameter %u: analytic %.6f, finite difference %.6f", j,
				 (double)g, fd);
	}
	ctr_batch_destroy(b);
}

/* ---- training over an in-memory stand-in for the cluster --------------------------------- */

/*
 * The stand-in: keys -> rows in an open-addressing table, each row followed by its optimizer
 * slots, and one dense row. The update is TensorFlow's, as the servers apply it on push:
 *   Adagrad: accum += g^2; var -= lr * g / sqrt(accum)        (accum starts at 0.1)
 *   Adam:    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), t counting push calls per variable;
 *            m += (g - m)(1 - beta1); v += (g^2 - v)(1 - beta2); var -= lr_t m / (sqrt(v) + eps)
 */
struct mem_store {
	enum ps_optim_kind kind;
	float lr;
	uint32_t width, dense_width;
	uint32_t n, cap, mask; /* rows used, rows allocated, table size - 1 */
	uint64_t *keys;
	uint32_t *table; /* 0 empty, else row + 1 */
	float *rows;	 /* per row: width values, then width per slot */
	float *dense;	 /* dense_width values, then the slots */
	double emb_b1p, emb_b2p, dense_b1p, dense_b2p; /* Adam: beta^t per variable */
};

static float gauss(uint64_t k)
{
	uint64_t a = ps_mix64(k), b = ps_mix64(a ^ 0x5555);
	double u1 = 1.0 - (double)(a >> 11) * 0x1.0p-53, u2 = (double)(b >> 11) * 0x1.0p-53;

	return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

static void mem_init_row(const struct mem_store *s, float *row, uint32_t width, float stddev,
			 uint64_t seed)
{
	for (uint32_t j = 0; j < width; j++) {
		row[j] = stddev * gauss(seed * 1000003 + j);
		row[width + j] = s->kind == PS_OPTIM_ADAGRAD ? 0.1f : 0.0f;
		row[2 * width + j] = 0;
	}
}

static void mem_grow(struct mem_store *s)
{
	uint32_t ncap = s->cap ? 2 * s->cap : 4096;

	s->keys = realloc(s->keys, sizeof(*s->keys) * ncap);
	s->rows = realloc(s->rows, sizeof(float) * 3 * s->width * (size_t)ncap);
	free(s->table);
	s->table = calloc(2 * (size_t)ncap, sizeof(*s->table));
	assert_non_null(s->keys);
	assert_non_null(s->rows);
	assert_non_null(s->table);
	s->cap = ncap;
	s->mask = 2 * ncap - 1;
	for (uint32_t i = 0; i < s->n; i++) {
		uint32_t h = (uint32_t)ps_mix64(s->keys[i]) & s->mask;

		while (s->table[h])
			h = (h + 1) & s->mask;
		s->table[h] = i + 1;
	}
}

/* The row of @key, created with the initializer on first touch (as the servers do). */
static float *mem_row(struct mem_store *s, uint64_t key)
{
	uint32_t h;

	if (s->n == s->cap)
		mem_grow(s);
	for (h = (uint32_t)ps_mix64(key) & s->mask; s->table[h]; h = (h + 1) & s->mask)
		if (s->keys[s->table[h] - 1] == key)
			return s->rows + (size_t)(s->table[h] - 1) * 3 * s->width;
	s->keys[s->n] = key;
	s->table[h] = ++s->n;
	mem_init_row(s, s->rows + (size_t)(s->n - 1) * 3 * s->width, s->width, CTR_EMB_INIT_STDDEV,
		     key);
	return s->rows + (size_t)(s->n - 1) * 3 * s->width;
}

static void mem_apply(const struct mem_store *s, float *var, const float *g, uint32_t w, double b1p,
		      double b2p)
{
	float *s1 = var + w, *s2 = var + 2 * w;

	if (s->kind == PS_OPTIM_ADAGRAD) {
		for (uint32_t j = 0; j < w; j++) {
			s1[j] += g[j] * g[j];
			var[j] -= s->lr * g[j] / sqrtf(s1[j]);
		}
		return;
	}
	float lr_t = (float)(s->lr * sqrt(1 - b2p) / (1 - b1p));

	for (uint32_t j = 0; j < w; j++) {
		s1[j] += (g[j] - s1[j]) * 0.1f;
		s2[j] += (g[j] * g[j] - s2[j]) * 0.001f;
		var[j] -= s1[j] * lr_t / (sqrtf(s2[j]) + 1e-8f);
	}
}

static int mem_hash_pull(void *ctx, const uint64_t *keys, size_t n, float *rows)
{
	struct mem_store *s = ctx;

	for (size_t i = 0; i < n; i++)
		memcpy(rows + i * s->width, mem_row(s, keys[i]), sizeof(float) * s->width);
	return 0;
}

static int mem_hash_push(void *ctx, const uint64_t *keys, size_t n, const float *grads)
{
	struct mem_store *s = ctx;

	s->emb_b1p *= 0.9;
	s->emb_b2p *= 0.999;
	for (size_t i = 0; i < n; i++)
		mem_apply(s, mem_row(s, keys[i]), grads + i * s->width, s->width, s->emb_b1p,
			  s->emb_b2p);
	return 0;
}

static int mem_dense_pull(void *ctx, float *dense, size_t n)
{
	struct mem_store *s = ctx;

	assert_int_equal(n, s->dense_width);
	memcpy(dense, s->dense, sizeof(float) * n);
	return 0;
}

static int mem_dense_push(void *ctx, const float *grad, size_t n)
{
	struct mem_store *s = ctx;

	assert_int_equal(n, s->dense_width);
	s->dense_b1p *= 0.9;
	s->dense_b2p *= 0.999;
	mem_apply(s, s->dense, grad, s->dense_width, s->dense_b1p, s->dense_b2p);
	return 0;
}

static unsigned mem_steps, mem_registered;

static int mem_step_end(void *ctx, uint64_t step)
{
	assert_int_equal(step, mem_steps);
	mem_steps++;
	return 0;
}

static int mem_register(void *ctx, void *addr, size_t len)
{
	assert_int_equal((uintptr_t)addr % 4096, 0);
	assert_true(len > 0);
	mem_registered++;
	return 0;
}

static const struct ctr_store_ops mem_ops = {
	.hash_pull = mem_hash_pull,
	.hash_push = mem_hash_push,
	.dense_pull = mem_dense_pull,
	.dense_push = mem_dense_push,
	.step_end = mem_step_end,
	.register_buffer = mem_register,
};

/* Train the demo's default model and data (200,000 / 50,000 examples, 2 epochs) in memory. */
static void train_in_memory(enum ps_optim_kind kind, float lr, uint64_t seed)
{
	struct ctr_data *d = data_new(seed);
	uint32_t nf = ctr_data_nfields(d);
	struct mem_store s = {
		.kind = kind,
		.lr = lr,
		.width = CTR_DEFAULT_WIDTH,
		.dense_width = ctr_model_dense_width(nf, CTR_DEFAULT_WIDTH),
		.emb_b1p = 1,
		.emb_b2p = 1,
		.dense_b1p = 1,
		.dense_b2p = 1,
	};
	struct ctr_train_opts o = {
		.data = d,
		.ops = &mem_ops,
		.ctx = &s,
		.width = CTR_DEFAULT_WIDTH,
		.batch = 512,
		.train_begin = 0,
		.train_end = 200000,
		.test_n = 50000,
	};
	struct ctr_trainer *t;
	struct ctr_epoch_result er;
	struct ctr_eval_result ev = {0};

	s.dense = calloc(3 * (size_t)s.dense_width, sizeof(float));
	assert_non_null(s.dense);
	mem_init_row(&s, s.dense, s.dense_width, CTR_DENSE_INIT_STDDEV, seed);
	mem_steps = mem_registered = 0;
	assert_int_equal(ctr_trainer_create(&o, &t), 0);
	assert_int_equal(mem_registered, 4);
	for (int e = 0; e < 2; e++) {
		assert_int_equal(ctr_trainer_epoch(t, &er), 0);
		assert_int_equal(ctr_trainer_eval(t, &ev), 0);
		printf("# %s seed %llu epoch %d: train_loss %.4f test_loss %.4f auc %.4f "
		       "planted_loss %.4f planted_auc %.4f click rate %.3f, %u keys\n",
		       kind == PS_OPTIM_ADAGRAD ? "adagrad" : "adam", (unsigned long long)seed,
		       e + 1, er.train_loss, ev.test_loss, ev.auc, ev.planted_loss, ev.planted_auc,
		       ev.click_rate, s.n);
		assert_int_equal(er.examples, 200000);
		assert_int_equal(ev.examples, 50000);
	}
	assert_int_equal(mem_steps, 2 * ((200000 + 511) / 512));
	assert_int_equal(ctr_trainer_steps(t), mem_steps);
	/* Not a trivial task, and learned to within 0.02 of what the features allow. */
	assert_true(ev.planted_auc > 0.75 && ev.planted_auc < 0.85);
	assert_true(ev.auc <= ev.planted_auc + 0.005);
	assert_true(ev.auc > ev.planted_auc - 0.02);
	/* The loss too: near the planted model's, far below always predicting the click rate. */
	assert_true(ev.test_loss < ev.planted_loss + 0.02);
	ctr_trainer_destroy(t);
	free(s.keys);
	free(s.rows);
	free(s.table);
	free(s.dense);
	ctr_data_destroy(d);
}

static void test_train_adagrad(void **state)
{
	(void)state;
	train_in_memory(PS_OPTIM_ADAGRAD, CTR_DEFAULT_ADAGRAD_LR, 1);
	train_in_memory(PS_OPTIM_ADAGRAD, CTR_DEFAULT_ADAGRAD_LR, 2);
}

static void test_train_adam(void **state)
{
	(void)state;
	train_in_memory(PS_OPTIM_ADAM, CTR_DEFAULT_ADAM_LR, 1);
}

/* A worker's slice and an empty one; bad options. */
static void test_trainer_opts(void **state)
{
	struct ctr_data *d = data_new(1);
	struct ctr_train_opts o = {.data = d,
				   .ops = &mem_ops,
				   .width = 8,
				   .batch = 16,
				   .train_begin = 5,
				   .train_end = 5,
				   .test_n = 10};
	struct ctr_trainer *t = (struct ctr_trainer *)&o;
	struct ctr_epoch_result er;

	(void)state;
	mem_steps = 0;
	assert_int_equal(ctr_trainer_create(&o, &t), 0);
	assert_int_equal(ctr_trainer_epoch(t, &er), 0); /* nothing to do, nothing pushed */
	assert_int_equal(er.examples, 0);
	assert_int_equal(mem_steps, 0);
	ctr_trainer_destroy(t);
	o.train_begin = 6;
	assert_int_equal(ctr_trainer_create(&o, &t), -EINVAL);
	assert_null(t);
	o.train_begin = 0;
	o.batch = 0;
	assert_int_equal(ctr_trainer_create(&o, &t), -EINVAL);
	o.batch = 16;
	o.test_n = 0;
	assert_int_equal(ctr_trainer_create(&o, &t), -EINVAL);
	ctr_trainer_destroy(NULL);
	ctr_data_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auc_hand),	  cmocka_unit_test(test_auc_pairwise),
		cmocka_unit_test(test_logloss),		  cmocka_unit_test(test_data_determinism),
		cmocka_unit_test(test_data_keys_weights), cmocka_unit_test(test_data_distribution),
		cmocka_unit_test(test_data_bad_opts),	  cmocka_unit_test(test_batch_dedup),
		cmocka_unit_test(test_gradient_check),	  cmocka_unit_test(test_trainer_opts),
		cmocka_unit_test(test_train_adagrad),	  cmocka_unit_test(test_train_adam),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
