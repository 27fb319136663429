/*
 * The conformance test's model (conformance_model.c): TensorFlow's optimizer formulas in double
 * precision, the documented initializer (docs/server-storage.md, "Initializers") and the test's
 * random numbers. Written from the documentation, not from server/, so that a transcription
 * error in either shows. Plain functions of their arguments; no state.
 */
#ifndef PS_TESTS_CONFORMANCE_MODEL_H
#define PS_TESTS_CONFORMANCE_MODEL_H

#include <stdint.h>

#include <psplus/types.h>

#define CFM_MAXW 19 /* widest row the model holds */

/* A row of the model: value and the optimizer's slots, in the order of docs/server-storage.md. */
struct cfm_row {
	double v[CFM_MAXW];
	double s[PS_OPTIM_MAX_SLOTS][CFM_MAXW];
};

/** cfm_rnd() - xorshift64* step of the state @s (the test's own generator). */
uint64_t cfm_rnd(uint64_t *s);

/** cfm_rnd_grad() - a gradient element, uniform in [-1, 1), from @s. */
float cfm_rnd_grad(uint64_t *s);

/**
 * cfm_init_row() - the initializer's @w floats of row (or key) @id / @hi of variable @var_id,
 * computed from the documented formula (counter-based: seed, variable id, id, column).
 */
void cfm_init_row(const struct ps_initializer *in, uint32_t var_id, uint64_t id, uint64_t hi,
		  float *out, uint32_t w);

/**
 * cfm_same_table_seed() - the seed that gives variable @id the table variable @id0 has with
 * @seed0 (the stream is mix64(mix64(seed + G) ^ var_id), and mix64 is a bijection).
 */
uint64_t cfm_same_table_seed(uint64_t seed0, uint32_t id0, uint32_t id);

/** cfm_row_init() - a fresh row: value @init, slots at the optimizer's start values. */
void cfm_row_init(const struct ps_optimizer *o, struct cfm_row *r, const float *init, uint32_t w);

/**
 * cfm_row_apply() - one update of @r by @o with gradient @g (duplicates already summed), Adam
 * at step @t (1-based) of the part holding the row.
 */
void cfm_row_apply(const struct ps_optimizer *o, uint64_t t, struct cfm_row *r, const double *g,
		   uint32_t w);

#endif
