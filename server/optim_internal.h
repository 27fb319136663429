/*
 * Between optim_params.c (validation, set-up) and optim_kernels.c (the per-row loops); nothing
 * outside the optimizer module includes this.
 */
#ifndef PS_SERVER_OPTIM_INTERNAL_H
#define PS_SERVER_OPTIM_INTERNAL_H

#include "server/optim.h"

/* ps_optim_step.variant bits for FTRL. */
#define PS_OPTIM_FTRL_SQRT 1 /* learning_rate_power == -0.5: sqrt instead of pow */
#define PS_OPTIM_FTRL_V2   2 /* l2_shrinkage > 0 */

void ps_optim_sgd_apply(const struct ps_optim_step *s, float *restrict row,
			const float *restrict g, uint32_t width);
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
