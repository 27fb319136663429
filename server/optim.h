/*
 * Server-side optimizers: TensorFlow's update formulas applied to one row at a time.
 *
 * A row is [value | slot0 | slot1 ...], each part `width` floats, contiguous (see store.h), so
 * an update reads and writes one region. The formulas, the slot order of each optimizer and the
 * initial slot values are in docs/server-storage.md; in short:
 *
 *	SGD               var -= lr * g
 *	Momentum          accum = accum * momentum + g;  var -= lr * accum
 *	                  (Nesterov: var -= g * lr + accum * momentum * lr)
 *	Adagrad           accum += g^2;  var -= lr * g / sqrt(accum)
 *	Adam              lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
 *	                  m += (g - m) * (1 - beta1);  v += (g^2 - v) * (1 - beta2)
 *	                  var -= lr_t * m / (sqrt(v) + epsilon)
 *	                  (Nesterov: m replaced by m * beta1 + (1 - beta1) * g)
 *	RMSProp           ms += (g^2 - ms) * (1 - rho)
 *	                  mom = mom * momentum + lr * g / sqrt(ms + epsilon);  var -= mom
 *	Centered RMSProp  mg += (g - mg) * (1 - rho); as RMSProp with sqrt(ms - mg^2 + epsilon)
 *	FTRL (V2)         see ps_optim_ftrl in docs; accum += g^2 with the raw gradient
 *
 * Adam's beta1^t and beta2^t are per variable part: t counts the push calls applied to the part,
 * as TF advances beta1_power once per apply. A sparse push applies the same formula to the rows
 * it touches only (TF's "lazy" Adam); other rows keep their m and v.
 *
 * Nothing here allocates or locks; a ps_optim_state belongs to the thread owning its part.
 */
#ifndef PS_SERVER_OPTIM_H
#define PS_SERVER_OPTIM_H

#include <stdint.h>

#include <psplus/types.h>

/** Per-part optimizer state beside the rows: what advances once per push call. */
struct ps_optim_state {
	double beta1_power; /* Adam: beta1^(t+1) before push t (0-based); TF starts it at beta1 */
	double beta2_power; /* Adam: beta2^(t+1) */
};

struct ps_optim_step;

/**
 * Applies one step of an optimizer to one row.
 * @row: the row ([value | slots], each @width floats); modified in place.
 * @g: the gradient, @width floats; must not overlap @row.
 */
typedef void (*ps_optim_kernel_fn)(const struct ps_optim_step *s, float *restrict row,
				   const float *restrict g, uint32_t width);

/**
 * One push call's worth of precomputed scalars (Adam's lr_t, 1 - beta, ...), so the per-row
 * kernel does no scalar set-up. Built by ps_optim_step_prepare(), read-only afterwards.
 */
struct ps_optim_step {
	ps_optim_kernel_fn apply; /* the kernel for this optimizer */
	float lr;		  /* learning rate; Adam: lr_t */
	float a;		  /* momentum / beta1 / rho (per kernel, see optim_kernels.c) */
	float one_minus_a;	  /* 1 - a, computed once */
	float b;		  /* beta2 / RMSProp momentum / FTRL l1 */
	float one_minus_b;	  /* 1 - b */
	float eps;		  /* epsilon / FTRL 2 * l2 */
	float c;		  /* FTRL: -learning_rate_power; */
	float d;		  /* FTRL: 2 * l2_shrinkage */
	float inv_lr;		  /* FTRL: 1 / lr */
	int variant;		  /* nesterov, or FTRL's fast path (power -0.5) / V2 */
};

/** ps_optim_slot_count() - slots kept beside each row by @kind (0..PS_OPTIM_MAX_SLOTS). */
unsigned ps_optim_slot_count(enum ps_optim_kind kind);

/** ps_optim_name() - "sgd", "momentum", ... for logs and benchmarks; "unknown" otherwise. */
const char *ps_optim_name(enum ps_optim_kind kind);

/**
 * ps_optim_validate() - check @o's kind and hyper-parameters (finite, in the ranges given in
 * psplus/types.h). Returns 0 or -EINVAL.
 */
int ps_optim_validate(const struct ps_optimizer *o);

/** ps_optim_state_init() - the state of a part before its first push (TF's initial powers). */
void ps_optim_state_init(const struct ps_optimizer *o, struct ps_optim_state *st);

/**
 * ps_optim_init_slots() - write the initial slot values of a fresh row (accumulators start at
 * initial_accumulator_value, RMSProp's ms at initial_ms, everything else at 0).
 * @row: the row; its value (first @width floats) is left alone.
 */
void ps_optim_init_slots(const struct ps_optimizer *o, float *row, uint32_t width);

/**
 * ps_optim_step_prepare() - precompute the scalars of one push call into @s and advance @st
 * past it (Adam's powers). Call it once per push, after the push was validated, so a refused
 * push leaves the state alone. @o must have passed ps_optim_validate().
 */
void ps_optim_step_prepare(const struct ps_optimizer *o, struct ps_optim_state *st,
			   struct ps_optim_step *s);

/*
 * ---- the kernels ---------------------------------------------------------------------------
 *
 * What ps_optim_step.apply points to (optim_kernels.c). Callers go through the step; the names
 * are here for benchmarks and tests that time or check one kernel directly.
 */

/* ps_optim_step.variant bits for FTRL. */
#define PS_OPTIM_FTRL_SQRT 1 /* learning_rate_power == -0.5: sqrt instead of pow */
#define PS_OPTIM_FTRL_V2   2 /* l2_shrinkage > 0 */

void ps_optim_sgd_apply(const struct ps_optim_step *s, float *restrict row, const float *restrict g,
			uint32_t width);
void ps_optim_momentum_apply(const struct ps_optim_step *s, float *restrict row,
			     const float *restrict g, uint32_t width);
void ps_optim_adagrad_apply(const struct ps_optim_step *s, float *restrict row,
			    const float *restrict g, uint32_t width);
void ps_optim_adam_apply(const struct ps_optim_step *s, float *restrict row,
			 const float *restrict g, uint32_t width);
void ps_optim_rmsprop_apply(const struct ps_optim_step *s, float *restrict row,
			    const float *restrict g, uint32_t width);
void ps_optim_centered_rmsprop_apply(const struct ps_optim_step *s, float *restrict row,
				     const float *restrict g, uint32_t width);
void ps_optim_ftrl_apply(const struct ps_optim_step *s, float *restrict row,
			 const float *restrict g, uint32_t width);

#endif
