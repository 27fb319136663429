/*
 * Optimizer set-up: hyper-parameter checks, slot counts and initial values, the per-part state
 * (Adam's powers) and the per-push scalars handed to the kernels.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stddef.h>

#include "server/optim.h"

unsigned ps_optim_slot_count(enum ps_optim_kind kind)
{
	switch (kind) {
	case PS_OPTIM_SGD:
		return 0;
	case PS_OPTIM_MOMENTUM:
	case PS_OPTIM_ADAGRAD:
		return 1;
	case PS_OPTIM_ADAM:
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_FTRL:
		return 2;
	case PS_OPTIM_CENTERED_RMSPROP:
		return 3;
	}
	return 0;
}

const char *ps_optim_name(enum ps_optim_kind kind)
{
	switch (kind) {
	case PS_OPTIM_SGD:
		return "sgd";
	case PS_OPTIM_MOMENTUM:
		return "momentum";
	case PS_OPTIM_ADAGRAD:
		return "adagrad";
	case PS_OPTIM_ADAM:
		return "adam";
	case PS_OPTIM_RMSPROP:
		return "rmsprop";
	case PS_OPTIM_CENTERED_RMSPROP:
		return "centered_rmsprop";
	case PS_OPTIM_FTRL:
		return "ftrl";
	}
	return "unknown";
}

/* in [lo, hi] (closed) and finite; NaN fails every comparison, so it is refused too. */
static int in_range(float v, float lo, float hi)
{
	return v >= lo && v <= hi;
}

static int fin(float v)
{
	return isfinite(v);
}

int ps_optim_validate(const struct ps_optimizer *o)
{
	if (!o)
		return -EINVAL;
	switch (o->kind) {
	case PS_OPTIM_SGD:
		return fin(o->sgd.learning_rate) ? 0 : -EINVAL;
	case PS_OPTIM_MOMENTUM:
		return fin(o->momentum.learning_rate) && fin(o->momentum.momentum) ? 0 : -EINVAL;
	case PS_OPTIM_ADAGRAD:
		/* TF1 refuses a zero accumulator: the first update would divide 0 by 0. */
		return fin(o->adagrad.learning_rate) &&
				       in_range(o->adagrad.initial_accumulator_value, FLT_MIN,
						FLT_MAX)
			       ? 0
			       : -EINVAL;
	case PS_OPTIM_ADAM:
		/* beta == 1 makes 1 - beta^t zero: lr_t divides by it. */
		if (!fin(o->adam.learning_rate) || !in_range(o->adam.beta1, 0.0f, 1.0f) ||
		    o->adam.beta1 == 1.0f || !in_range(o->adam.beta2, 0.0f, 1.0f) ||
		    o->adam.beta2 == 1.0f || !in_range(o->adam.epsilon, 0.0f, FLT_MAX))
			return -EINVAL;
		return 0;
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_CENTERED_RMSPROP:
		if (!fin(o->rmsprop.learning_rate) || !in_range(o->rmsprop.rho, 0.0f, 1.0f) ||
		    !in_range(o->rmsprop.momentum, 0.0f, FLT_MAX) ||
		    !in_range(o->rmsprop.epsilon, 0.0f, FLT_MAX) ||
		    !in_range(o->rmsprop.initial_ms, 0.0f, FLT_MAX))
			return -EINVAL;
		return 0;
	case PS_OPTIM_FTRL:
		/* TF's checks: lr > 0, power <= 0, l1, l2, shrinkage and accumulator >= 0. */
		if (!in_range(o->ftrl.learning_rate, FLT_MIN, FLT_MAX) ||
		    !in_range(o->ftrl.learning_rate_power, -FLT_MAX, 0.0f) ||
		    !in_range(o->ftrl.l1, 0.0f, FLT_MAX) || !in_range(o->ftrl.l2, 0.0f, FLT_MAX) ||
		    !in_range(o->ftrl.l2_shrinkage, 0.0f, FLT_MAX) ||
		    !in_range(o->ftrl.initial_accumulator_value, 0.0f, FLT_MAX))
			return -EINVAL;
		return 0;
	}
	return -EINVAL;
}

void ps_optim_state_init(const struct ps_optimizer *o, struct ps_optim_state *st)
{
	/* TF's AdamOptimizer creates beta1_power = beta1: the first apply already uses beta^1. */
	if (o->kind == PS_OPTIM_ADAM) {
		st->beta1_power = o->adam.beta1;
		st->beta2_power = o->adam.beta2;
	} else {
		st->beta1_power = 1.0;
		st->beta2_power = 1.0;
	}
}

static void fill(float *p, uint32_t n, float v)
{
	for (uint32_t i = 0; i < n; i++)
		p[i] = v;
}

void ps_optim_init_slots(const struct ps_optimizer *o, float *row, uint32_t width)
{
	unsigned n = ps_optim_slot_count(o->kind);
	float *slot = row + width;

	fill(slot, n * width, 0.0f);
	switch (o->kind) {
	case PS_OPTIM_ADAGRAD:
		fill(slot, width, o->adagrad.initial_accumulator_value);
		break;
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_CENTERED_RMSPROP:
		fill(slot, width, o->rmsprop.initial_ms); /* ms is slot 0 */
		break;
	case PS_OPTIM_FTRL:
		fill(slot, width, o->ftrl.initial_accumulator_value); /* accum is slot 0 */
		break;
	default:
		break;
	}
}

void ps_optim_step_prepare(const struct ps_optimizer *o, struct ps_optim_state *st,
			   struct ps_optim_step *s)
{
	*s = (struct ps_optim_step){0};
	switch (o->kind) {
	case PS_OPTIM_SGD:
		s->apply = ps_optim_sgd_apply;
		s->lr = o->sgd.learning_rate;
		break;
	case PS_OPTIM_MOMENTUM:
		s->apply = ps_optim_momentum_apply;
		s->lr = o->momentum.learning_rate;
		s->a = o->momentum.momentum;
		s->variant = o->momentum.use_nesterov;
		break;
	case PS_OPTIM_ADAGRAD:
		s->apply = ps_optim_adagrad_apply;
		s->lr = o->adagrad.learning_rate;
		break;
	case PS_OPTIM_ADAM:
		s->apply = ps_optim_adam_apply;
		/* lr_t in double from the double powers, rounded once: TF's float powers drift. */
		s->lr = (float)((double)o->adam.learning_rate * sqrt(1.0 - st->beta2_power) /
				(1.0 - st->beta1_power));
		s->a = o->adam.beta1;
		s->one_minus_a = 1.0f - o->adam.beta1;
		s->b = o->adam.beta2;
		s->one_minus_b = 1.0f - o->adam.beta2;
		s->eps = o->adam.epsilon;
		s->variant = o->adam.use_nesterov;
		st->beta1_power *= o->adam.beta1;
		st->beta2_power *= o->adam.beta2;
		break;
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_CENTERED_RMSPROP:
		s->apply = o->kind == PS_OPTIM_RMSPROP ? ps_optim_rmsprop_apply
						       : ps_optim_centered_rmsprop_apply;
		s->lr = o->rmsprop.learning_rate;
		s->a = o->rmsprop.rho;
		s->one_minus_a = 1.0f - o->rmsprop.rho;
		s->b = o->rmsprop.momentum;
		s->eps = o->rmsprop.epsilon;
		break;
	case PS_OPTIM_FTRL:
		s->apply = ps_optim_ftrl_apply;
		s->lr = o->ftrl.learning_rate;
		s->inv_lr = 1.0f / o->ftrl.learning_rate;
		s->b = o->ftrl.l1;
		s->eps = 2.0f * o->ftrl.l2;
		s->c = -o->ftrl.learning_rate_power;
		s->d = 2.0f * o->ftrl.l2_shrinkage;
		s->variant = (o->ftrl.learning_rate_power == -0.5f ? PS_OPTIM_FTRL_SQRT : 0) |
			     (o->ftrl.l2_shrinkage > 0.0f ? PS_OPTIM_FTRL_V2 : 0);
		break;
	}
}
