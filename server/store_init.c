/*
 * Initializers and hash admission: counter-based random streams.
 *
 * Every random number is a pure function of (seed, variable id, row id or key, column, draw
 * number), never of a generator's state, so a row gets the same floats whichever server, part or
 * thread creates it, and in whatever order rows are touched. The construction is splitmix64
 * used as a counter-based generator (as Philox is, with a cheaper round function):
 *
 *	G        = 0x9e3779b97f4a7c15                 (splitmix64's increment)
 *	stream   = mix64(mix64(seed + G) ^ var_id)
 *	rowbase  = mix64(stream ^ mix64(id + G) ^ mix64(key_hi + 2G))
 *	x(c, k)  = mix64(rowbase + (512 * c + k + 1) * G)   for column c, draw k in [0, 512)
 *	u(x)     = (x >> 11) * 2^-53                        uniform in [0, 1)
 *	u'(x)    = ((x >> 11) + 1) * 2^-53                  uniform in (0, 1]
 *
 * with mix64 the splitmix64 finaliser of psplus/types.h and all arithmetic mod 2^64. Then
 *
 *	uniform(min, max)       min + (max - min) * u(x(c, 0))
 *	normal(mean, stddev)    mean + stddev * z(c, 0), where
 *	                        z(c, a) = sqrt(-2 ln u'(x(c, 2a))) * cos(2 pi u(x(c, 2a + 1)))
 *	truncated_normal        mean + stddev * z(c, a) for the first a with |z(c, a)| <= 2
 *	                        (TF re-draws beyond two standard deviations; after 256 rejected
 *	                        pairs, probability 0.0455^256, the value is the mean)
 *
 * computed in double and rounded to float once. Dense and sparse rows use id = row id and
 * key_hi = 0, hash64 rows id = key and key_hi = 0, hash128 rows (lo, hi).
 *
 * Admission of hash key (key, key_hi) with probability p and seed s:
 *	admitted  <=>  u(mix64(mix64(s ^ A) ^ mix64(key + G) ^ mix64(key_hi + 2G))) < p
 * with A = 0x3c6ef372fe94f82b, so it is independent of the initializer streams.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "server/store_internal.h"

#define GOLDEN	   0x9e3779b97f4a7c15ull
#define ADMIT_SALT 0x3c6ef372fe94f82bull
#define DRAWS	   512u /* draws per column: 2 per truncated-normal attempt */
#define TWO_PI	   6.283185307179586476925286766559

static inline double u01(uint64_t x)
{
	return (double)(x >> 11) * 0x1.0p-53;
}

static inline double u01_open0(uint64_t x)
{
	return (double)((x >> 11) + 1) * 0x1.0p-53;
}

static inline uint64_t draw(uint64_t rowbase, uint32_t col, uint32_t k)
{
	return ps_mix64(rowbase + ((uint64_t)DRAWS * col + k + 1) * GOLDEN);
}

static inline double gauss(uint64_t rowbase, uint32_t col, uint32_t attempt)
{
	double r = sqrt(-2.0 * log(u01_open0(draw(rowbase, col, 2 * attempt))));

	return r * cos(TWO_PI * u01(draw(rowbase, col, 2 * attempt + 1)));
}

static uint64_t row_base(uint64_t seed, uint64_t var_id, uint64_t id, uint64_t key_hi)
{
	uint64_t stream = ps_mix64(ps_mix64(seed + GOLDEN) ^ var_id);

	return ps_mix64(stream ^ ps_mix64(id + GOLDEN) ^ ps_mix64(key_hi + 2 * GOLDEN));
}

int ps_store_init_validate(const struct ps_initializer *init)
{
	if (!init)
		return -EINVAL;
	switch (init->kind) {
	case PS_INIT_ZEROS:
		return 0;
	case PS_INIT_CONSTANT:
		return isfinite(init->value) ? 0 : -EINVAL;
	case PS_INIT_UNIFORM:
		return isfinite(init->min) && isfinite(init->max) && init->min < init->max
			       ? 0
			       : -EINVAL;
	case PS_INIT_NORMAL:
	case PS_INIT_TRUNCATED_NORMAL:
		return isfinite(init->mean) && isfinite(init->stddev) && init->stddev >= 0.0f
			       ? 0
			       : -EINVAL;
	}
	return -EINVAL;
}

void ps_store_init_row(const struct ps_initializer *init, uint64_t var_id, uint64_t id,
		       uint64_t key_hi, float *out, uint32_t width)
{
	uint64_t base;

	switch (init->kind) {
	case PS_INIT_ZEROS:
		memset(out, 0, width * sizeof(float));
		return;
	case PS_INIT_CONSTANT:
		for (uint32_t c = 0; c < width; c++)
			out[c] = init->value;
		return;
	default:
		break;
	}
	base = row_base(init->seed, var_id, id, key_hi);
	for (uint32_t c = 0; c < width; c++) {
		double v = init->mean;

		if (init->kind == PS_INIT_UNIFORM) {
			v = init->min + ((double)init->max - init->min) * u01(draw(base, c, 0));
		} else if (init->kind == PS_INIT_NORMAL) {
			v = init->mean + (double)init->stddev * gauss(base, c, 0);
		} else {
			for (uint32_t a = 0; a < DRAWS / 2; a++) {
				double z = gauss(base, c, a);

				if (fabs(z) <= 2.0) {
					v = init->mean + (double)init->stddev * z;
					break;
				}
			}
		}
		out[c] = (float)v;
		/* Rounding to float can reach max itself; keep the interval half-open. */
		if (init->kind == PS_INIT_UNIFORM && out[c] >= init->max)
			out[c] = nextafterf(init->max, init->min);
	}
}

void ps_store_init_fresh_row(const struct ps_store_part *p, float *row, uint64_t id,
			     uint64_t key_hi)
{
	ps_store_init_row(&p->spec.init, p->var_id, id, key_hi, row, p->width);
	ps_optim_init_slots(&p->spec.optim, row, p->width);
}

bool ps_store_hash_admit(float prob, uint64_t seed, uint64_t key, uint64_t key_hi)
{
	uint64_t x;

	if (prob <= 0.0f || prob >= 1.0f)
		return true; /* 0 is "admission off", as in ps_var_spec */
	x = ps_mix64(ps_mix64(seed ^ ADMIT_SALT) ^ ps_mix64(key + GOLDEN) ^
		     ps_mix64(key_hi + 2 * GOLDEN));
	return u01(x) < (double)prob;
}
