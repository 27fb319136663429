/*
 * psplus-bench-ps: the id batches (uniform or Zipf), and the rows the data checks know.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "perf/bench_ps.h"

/* Zipf ranks are spread over the rows by multiplying with this prime (a bijection mod rows
 * whenever it does not divide rows), so hot rows land on every server and thread, as hashed
 * feature ids do; --hot low keeps rank order (a vocabulary sorted by frequency). */
#define SCATTER_PRIME 2654435761ull

uint64_t bp_rand(uint64_t *state)
{
	*state += 0x9e3779b97f4a7c15ull;
	return bench_mix64(*state);
}

/* A double in [0, 1) from 53 random bits. */
static double rand_unit(uint64_t *state)
{
	return (double)(bp_rand(state) >> 11) * 0x1.0p-53;
}

/* log1p(x) / x, continuous at 0. */
static double helper1(double x)
{
	return fabs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
}

/* expm1(x) / x, continuous at 0. */
static double helper2(double x)
{
	return fabs(x) > 1e-8 ? expm1(x) / x : 1 + x * 0.5 * (1 + x / 3 * (1 + 0.25 * x));
}

/*
 * The hat function is h(x) = x^-s; H is an antiderivative of it, written with the helpers so
 * that s = 1 (where it is log x) needs no special case.
 */
static double zh(const struct bp_zipf *z, double x)
{
	return exp(-z->s * log(x));
}

static double zH(const struct bp_zipf *z, double x)
{
	double lx = log(x);

	return helper2((1 - z->s) * lx) * lx;
}

static double zH_inv(const struct bp_zipf *z, double x)
{
	double t = x * (1 - z->s);

	if (t < -1) /* rounding can put x just out of H's range */
		t = -1;
	return exp(helper1(t) * x);
}

int bp_zipf_init(struct bp_zipf *z, uint64_t n, double s)
{
	if (!n || !(s > 0))
		return -EINVAL;
	z->n = n;
	z->s = s;
	z->h_x1 = zH(z, 1.5) - 1;
	z->h_n = zH(z, (double)n + 0.5);
	z->cut = 2 - zH_inv(z, zH(z, 2.5) - zh(z, 2));
	return 0;
}

uint64_t bp_zipf_draw(const struct bp_zipf *z, uint64_t *state)
{
	for (;;) {
		/* u uniform over (H(1.5) - 1, H(n + 0.5)]: the area under the hat. */
		double u = z->h_n + rand_unit(state) * (z->h_x1 - z->h_n);
		double x = zH_inv(z, u);
		double kd = floor(x + 0.5);
		uint64_t k;

		if (kd < 1)
			kd = 1;
		else if (kd > (double)z->n)
			kd = (double)z->n;
		k = (uint64_t)kd;
		/* Accept when x is close enough to k that the hat is below the mass of k, or when
		 * u falls under it: the accepted k has probability k^-s / sum. */
		if (kd - x <= z->cut || u >= zH(z, kd + 0.5) - zh(z, kd))
			return k;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static size_t distinct_sorted(const uint64_t *v, size_t n)
{
	size_t d = n ? 1 : 0;

	for (size_t i = 1; i < n; i++)
		d += v[i] != v[i - 1];
	return d;
}

double bp_ids_make(const struct bp_opts *o, uint64_t *ids)
{
	uint64_t st = bench_mix64(o->seed ^ 0x5053424944530000ull); /* "PSBIDS" */
	uint64_t *tmp = o->sorted ? NULL : malloc(o->batch * sizeof(*tmp));
	bool scatter = !o->hot_low && o->rows % SCATTER_PRIME;
	struct bp_zipf z;
	double distinct = 0;

	if (o->dist == BP_ZIPF)
		bp_zipf_init(&z, o->rows, o->zipf_s); /* rows and s were checked with the options */
	for (uint32_t b = 0; b < o->pool; b++) {
		uint64_t *v = ids + (size_t)b * o->batch;

		for (uint32_t i = 0; i < o->batch; i++) {
			if (o->dist == BP_UNIFORM) {
				/* Lemire's multiply-shift: uniform over [0, rows) up to 2^-64 bias. */
				v[i] = (uint64_t)(((unsigned __int128)bp_rand(&st) * o->rows) >>
						  64);
			} else {
				uint64_t r = bp_zipf_draw(&z, &st) - 1;

				v[i] = scatter ? (uint64_t)(((unsigned __int128)r * SCATTER_PRIME) %
							    o->rows)
					       : r;
			}
		}
		if (o->sorted) {
			qsort(v, o->batch, sizeof(*v), cmp_u64);
			distinct += (double)distinct_sorted(v, o->batch);
		} else if (tmp) {
			memcpy(tmp, v, o->batch * sizeof(*tmp));
			qsort(tmp, o->batch, sizeof(*tmp), cmp_u64);
			distinct += (double)distinct_sorted(tmp, o->batch);
		}
	}
	free(tmp);
	return o->pool ? distinct / o->pool : 0;
}

bool bp_marked(uint64_t id)
{
	/* The same rows in every run and whatever the seed: the prepared variable outlives a run. */
	return (bench_mix64(id ^ 0x4d41524b4544ull) & BP_MARK_MASK) == 0;
}

float bp_pattern(uint64_t id, uint32_t j)
{
	/* Whole numbers below 2^23: exact in float32, and distinct for neighbouring rows and
	 * columns, so a row or a column out of place does not check. */
	return (float)((id * 131u + (uint64_t)j * 7u) % 8388593u + 1u);
}

float bp_grad(uint32_t j)
{
	return (float)(1u + (j & 3u));
}
