/*
 * The conformance test's model: see conformance_model.h.
 */
#include <math.h>
#include <string.h>

#include "tests/integration/conformance_model.h"

#define GOLD 0x9e3779b97f4a7c15ull

/* xorshift64*: the test's own generator. */
uint64_t cfm_rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

float cfm_rnd_grad(uint64_t *s)
{
	return (float)((double)(cfm_rnd(s) >> 11) * 0x1p-53 * 2.0 - 1.0);
}

/* ---- the documented initializer (docs/server-storage.md, "Initializers") --------------------- */

static double u53(uint64_t x)
{
	return (double)(x >> 11) * 0x1p-53;
}

static double u53_open(uint64_t x)
{
	return (double)((x >> 11) + 1) * 0x1p-53;
}

static uint64_t draw(uint64_t rowbase, uint32_t col, uint32_t k)
{
	return ps_mix64(rowbase + (512ull * col + k + 1) * GOLD);
}

static double gauss(uint64_t rowbase, uint32_t col, uint32_t a)
{
	return sqrt(-2.0 * log(u53_open(draw(rowbase, col, 2 * a)))) *
	       cos(2.0 * M_PI * u53(draw(rowbase, col, 2 * a + 1)));
}

void cfm_init_row(const struct ps_initializer *in, uint32_t var_id, uint64_t id, uint64_t hi,
		  float *out, uint32_t w)
{
	uint64_t stream = ps_mix64(ps_mix64(in->seed + GOLD) ^ var_id);
	uint64_t base = ps_mix64(stream ^ ps_mix64(id + GOLD) ^ ps_mix64(hi + 2 * GOLD));

	for (uint32_t c = 0; c < w; c++) {
		double v = in->mean;

		switch (in->kind) {
		case PS_INIT_ZEROS:
			v = 0;
			break;
		case PS_INIT_CONSTANT:
			v = in->value;
			break;
		case PS_INIT_UNIFORM:
			v = in->min + ((double)in->max - in->min) * u53(draw(base, c, 0));
			break;
		case PS_INIT_NORMAL:
			v = in->mean + (double)in->stddev * gauss(base, c, 0);
			break;
		case PS_INIT_TRUNCATED_NORMAL:
			for (uint32_t a = 0; a < 256; a++) {
				double z = gauss(base, c, a);

				if (fabs(z) <= 2.0) {
					v = in->mean + (double)in->stddev * z;
					break;
				}
			}
			break;
		}
		out[c] = (float)v;
		if (in->kind == PS_INIT_UNIFORM && out[c] >= in->max)
			out[c] = nextafterf(in->max, -INFINITY);
	}
}

/* x such that y = x ^ (x >> shift). */
static uint64_t unshift(uint64_t y, unsigned shift)
{
	uint64_t x = y;

	for (unsigned s = shift; s < 64; s += shift)
		x ^= y >> s;
	return x;
}

/* The inverse of an odd number mod 2^64 (Newton's iteration doubles the correct bits). */
static uint64_t inv_odd(uint64_t a)
{
	uint64_t x = a;

	for (int i = 0; i < 5; i++)
		x *= 2 - a * x;
	return x;
}

static uint64_t unmix64(uint64_t z)
{
	z = unshift(z, 31);
	z *= inv_odd(0x94d049bb133111ebull);
	z = unshift(z, 27);
	z *= inv_odd(0xbf58476d1ce4e5b9ull);
	return unshift(z, 30);
}

/*
 * The seed that gives variable @id the table variable @id0 has with @seed0: the initializer's
 * stream is mix64(mix64(seed + G) ^ var_id), and mix64 is a bijection.
 */
uint64_t cfm_same_table_seed(uint64_t seed0, uint32_t id0, uint32_t id)
{
	return unmix64(ps_mix64(seed0 + GOLD) ^ id0 ^ id) - GOLD;
}

/* ---- the model: TF's raw-op formulas in double ----------------------------------------------- */

void cfm_row_init(const struct ps_optimizer *o, struct cfm_row *r, const float *init, uint32_t w)
{
	memset(r, 0, sizeof(*r));
	for (uint32_t i = 0; i < w; i++) {
		r->v[i] = init[i];
		if (o->kind == PS_OPTIM_ADAGRAD)
			r->s[0][i] = o->adagrad.initial_accumulator_value;
		else if (o->kind == PS_OPTIM_RMSPROP || o->kind == PS_OPTIM_CENTERED_RMSPROP)
			r->s[0][i] = o->rmsprop.initial_ms;
		else if (o->kind == PS_OPTIM_FTRL)
			r->s[0][i] = o->ftrl.initial_accumulator_value;
	}
}

/*
 * One apply of @o to @r with gradient @g at Adam step @t (1-based), in the textbook form
 * (m = b1 m + (1 - b1) g, not TF's incremental one), so a transcription error shows.
 */
void cfm_row_apply(const struct ps_optimizer *o, uint64_t t, struct cfm_row *r, const double *g,
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
			*var -= o->momentum.use_nesterov ? lr * gi + lr * mu * *s0 : lr * *s0;
			break;
		}
		case PS_OPTIM_ADAGRAD:
			*s0 += gi * gi;
			*var -= (double)o->adagrad.learning_rate * gi / sqrt(*s0);
			break;
		case PS_OPTIM_ADAM: {
			double b1 = o->adam.beta1, b2 = o->adam.beta2, eps = o->adam.epsilon;
			double td = (double)t;
			double lr_t =
				o->adam.learning_rate * sqrt(1 - pow(b2, td)) / (1 - pow(b1, td));

			*s0 = b1 * *s0 + (1 - b1) * gi;
			*s1 = b2 * *s1 + (1 - b2) * gi * gi;
			if (o->adam.use_nesterov)
				*var -= lr_t * (b1 * *s0 + (1 - b1) * gi) / (sqrt(*s1) + eps);
			else
				*var -= lr_t * *s0 / (sqrt(*s1) + eps);
			break;
		}
		case PS_OPTIM_RMSPROP:
		case PS_OPTIM_CENTERED_RMSPROP: {
			double rho = o->rmsprop.rho, mu = o->rmsprop.momentum;
			double denom;

			*s0 = rho * *s0 + (1 - rho) * gi * gi;
			denom = *s0 + (double)o->rmsprop.epsilon;
			if (o->kind == PS_OPTIM_CENTERED_RMSPROP) {
				*s2 = rho * *s2 + (1 - rho) * gi;
				denom -= *s2 * *s2;
			}
			*s1 = mu * *s1 + (double)o->rmsprop.learning_rate * gi / sqrt(denom);
			*var -= *s1;
			break;
		}
		case PS_OPTIM_FTRL: {
			double lr = o->ftrl.learning_rate, p = o->ftrl.learning_rate_power;
			double l1 = o->ftrl.l1, l2 = o->ftrl.l2, shr = o->ftrl.l2_shrinkage;
			double gs = shr > 0 ? gi + 2 * shr * *var : gi;
			double acc_new = *s0 + gi * gi; /* the raw gradient, as TF's kernels do */
			double quad;

			*s1 += gs - (pow(acc_new, -p) - pow(*s0, -p)) / lr * *var;
			quad = pow(acc_new, -p) / lr + 2 * l2;
			*var = fabs(*s1) > l1 ? ((*s1 < 0 ? -1.0 : 1.0) * l1 - *s1) / quad : 0.0;
			*s0 = acc_new;
			break;
		}
		}
	}
}
