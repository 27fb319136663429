/*
 * The per-row update kernels, one per optimizer, in float32 as TensorFlow computes them for a
 * float32 variable. Each kernel walks the row's value and slots side by side with unit stride,
 * so the compiler vectorises the loops (the variant tests sit outside the loops for the same
 * reason). Formulas: optim.h and docs/server-storage.md.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "server/optim.h"

/*
 * The build targets baseline x86-64 (SSE2, 4 floats a vector). Each kernel is also compiled for
 * AVX2 and AVX-512 and the loader picks the best the CPU has (an ifunc, resolved once): the
 * sqrt and division throughput of the wider units roughly doubles sparse updates, where the
 * arithmetic after each row's cache miss is on the critical path.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#define PS_KERNEL __attribute__((target_clones("default", "avx2", "avx512f")))
#else
#define PS_KERNEL
#endif

PS_KERNEL void ps_optim_sgd_apply(const struct ps_optim_step *s, float *restrict row,
				  const float *restrict g, uint32_t width)
{
	const float lr = s->lr;

	for (uint32_t i = 0; i < width; i++)
		row[i] -= lr * g[i];
}

PS_KERNEL void ps_optim_momentum_apply(const struct ps_optim_step *s, float *restrict row,
				       const float *restrict g, uint32_t width)
{
	float *restrict var = row;
	float *restrict accum = row + width;
	const float lr = s->lr, mom = s->a;

	if (s->variant) {
		for (uint32_t i = 0; i < width; i++) {
			accum[i] = accum[i] * mom + g[i];
			var[i] -= g[i] * lr + accum[i] * mom * lr;
		}
	} else {
		for (uint32_t i = 0; i < width; i++) {
			accum[i] = accum[i] * mom + g[i];
			var[i] -= lr * accum[i];
		}
	}
}

PS_KERNEL void ps_optim_adagrad_apply(const struct ps_optim_step *s, float *restrict row,
				      const float *restrict g, uint32_t width)
{
	float *restrict var = row;
	float *restrict accum = row + width;
	const float lr = s->lr;

	for (uint32_t i = 0; i < width; i++) {
		accum[i] += g[i] * g[i];
		var[i] -= lr * g[i] / sqrtf(accum[i]);
	}
}

PS_KERNEL void ps_optim_adam_apply(const struct ps_optim_step *s, float *restrict row,
				   const float *restrict g, uint32_t width)
{
	float *restrict var = row;
	float *restrict m = row + width;
	float *restrict v = row + 2 * (size_t)width;
	const float lr_t = s->lr, b1 = s->a, omb1 = s->one_minus_a, omb2 = s->one_minus_b;
	const float eps = s->eps;

	if (s->variant) {
		for (uint32_t i = 0; i < width; i++) {
			m[i] += (g[i] - m[i]) * omb1;
			v[i] += (g[i] * g[i] - v[i]) * omb2;
			var[i] -= (m[i] * b1 + omb1 * g[i]) * lr_t / (sqrtf(v[i]) + eps);
		}
	} else {
		for (uint32_t i = 0; i < width; i++) {
			m[i] += (g[i] - m[i]) * omb1;
			v[i] += (g[i] * g[i] - v[i]) * omb2;
			var[i] -= m[i] * lr_t / (sqrtf(v[i]) + eps);
		}
	}
}

PS_KERNEL void ps_optim_rmsprop_apply(const struct ps_optim_step *s, float *restrict row,
				      const float *restrict g, uint32_t width)
{
	float *restrict var = row;
	float *restrict ms = row + width;
	float *restrict mom = row + 2 * (size_t)width;
	const float lr = s->lr, omr = s->one_minus_a, momentum = s->b, eps = s->eps;

	for (uint32_t i = 0; i < width; i++) {
		ms[i] += (g[i] * g[i] - ms[i]) * omr;
		mom[i] = mom[i] * momentum + lr * g[i] / sqrtf(ms[i] + eps);
		var[i] -= mom[i];
	}
}

PS_KERNEL void ps_optim_centered_rmsprop_apply(const struct ps_optim_step *s, float *restrict row,
					       const float *restrict g, uint32_t width)
{
	float *restrict var = row;
	float *restrict ms = row + width;
	float *restrict mom = row + 2 * (size_t)width;
	float *restrict mg = row + 3 * (size_t)width;
	const float lr = s->lr, omr = s->one_minus_a, momentum = s->b, eps = s->eps;

	for (uint32_t i = 0; i < width; i++) {
		mg[i] += (g[i] - mg[i]) * omr;
		ms[i] += (g[i] * g[i] - ms[i]) * omr;
		mom[i] = mom[i] * momentum + lr * g[i] / sqrtf(ms[i] - mg[i] * mg[i] + eps);
		var[i] -= mom[i];
	}
}

/*
 * FTRL-proximal (TF ApplyFtrl; ApplyFtrlV2 when l2_shrinkage > 0):
 *
 *	g' = g + 2 * l2_shrinkage * var                 (V2 only; g' = g otherwise)
 *	accum_new = accum + g^2                         (the raw gradient, as TF's dense kernel)
 *	linear += g' - (accum_new^-p - accum^-p) / lr * var          (p = learning_rate_power)
 *	quadratic = accum_new^-p / lr + 2 * l2
 *	var = |linear| > l1 ? (sign(linear) * l1 - linear) / quadratic : 0
 *	accum = accum_new
 *
 * The difference accum_new^-p - accum^-p is computed without cancellation: as
 * g^2 / (sqrt(accum_new) + sqrt(accum)) for the default power -0.5, and as
 * accum^-p * expm1(-p * log1p(g^2 / accum)) otherwise. TF subtracts the two powers in float,
 * which loses most digits once accum is large against g^2 (late in training): the same value
 * mathematically, here correct to a few ulps.
 */
/*
 * Power -0.5, the common case: branch-free, so the loop vectorises. Both divisions run
 * unconditionally and a select picks the result (a division under a condition is not
 * if-converted: it might trap); den is 0 only when g^2 is 0 too, so 0 / 1 is the 0 wanted.
 * (fmaxf would not do: without -ffinite-math-only it has no vector form.)
 */
PS_KERNEL static void ftrl_sqrt(const struct ps_optim_step *s, float *restrict var,
				float *restrict accum, float *restrict linear,
				const float *restrict g, uint32_t width, float shr)
{
	const float inv_lr = s->inv_lr, l1 = s->b, two_l2 = s->eps;

	for (uint32_t i = 0; i < width; i++) {
		float gi = g[i], w = var[i], acc = accum[i];
		float g2 = gi * gi, acc_new = acc + g2;
		float pw_new = sqrtf(acc_new), den = pw_new + sqrtf(acc);
		float diff = g2 / (den > 0.0f ? den : 1.0f);
		float lin = linear[i] + (gi + shr * w) - diff * inv_lr * w;
		float q = (copysignf(l1, lin) - lin) / (pw_new * inv_lr + two_l2);

		linear[i] = lin;
		var[i] = fabsf(lin) > l1 ? q : 0.0f;
		accum[i] = acc_new;
	}
}

/* Any other power: pow, expm1 and log1p per element (scalar libm calls). */
PS_KERNEL static void ftrl_pow(const struct ps_optim_step *s, float *restrict var,
			       float *restrict accum, float *restrict linear,
			       const float *restrict g, uint32_t width, float shr)
{
	const float inv_lr = s->inv_lr, l1 = s->b, two_l2 = s->eps, neg_p = s->c;

	for (uint32_t i = 0; i < width; i++) {
		float gi = g[i], w = var[i], acc = accum[i];
		float g2 = gi * gi, acc_new = acc + g2;
		float pw_new = powf(acc_new, neg_p);
		float diff = acc > 0.0f ? powf(acc, neg_p) * expm1f(neg_p * log1pf(g2 / acc))
					: pw_new - powf(acc, neg_p);
		float lin = linear[i] + (gi + shr * w) - diff * inv_lr * w;

		linear[i] = lin;
		var[i] = fabsf(lin) > l1 ? (copysignf(l1, lin) - lin) / (pw_new * inv_lr + two_l2)
					 : 0.0f;
		accum[i] = acc_new;
	}
}

PS_KERNEL void ps_optim_ftrl_apply(const struct ps_optim_step *s, float *restrict row,
				   const float *restrict g, uint32_t width)
{
	/* g' = g + 2 * l2_shrinkage * var is g when the shrinkage is 0 (FtrlV1): one loop. */
	float shr = (s->variant & PS_OPTIM_FTRL_V2) ? s->d : 0.0f;

	if (s->variant & PS_OPTIM_FTRL_SQRT)
		ftrl_sqrt(s, row, row + width, row + 2 * (size_t)width, g, width, shr);
	else
		ftrl_pow(s, row, row + width, row + 2 * (size_t)width, g, width, shr);
}
