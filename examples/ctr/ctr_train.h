/*
 * psplus-ctr: the training and evaluation loops, over any parameter store.
 *
 * The loops see the parameters only through struct ctr_store_ops: psplus-ctr plugs in the
 * psplus client (a cluster), the unit test an in-memory table with the same optimizer formula.
 * One step of training is
 *
 *	build a deduplicated batch -> pull its distinct rows and the dense layer -> forward ->
 *	backward (one summed gradient per distinct key) -> push the rows' and the dense gradients
 *
 * and an evaluation pulls (never pushes) the rows of every test example, then computes the
 * test loss and the exact AUC of the model next to those of the planted model.
 */
#ifndef PS_EXAMPLES_CTR_TRAIN_H
#define PS_EXAMPLES_CTR_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "ctr_data.h"

/**
 * struct ctr_store_ops - where the parameters live. Every call returns 0 or a negative code,
 * and the loops stop at the first failure and return it.
 */
struct ctr_store_ops {
	/* the rows of @keys[0..n) into @rows (n x width); unseen keys get a fresh row */
	int (*hash_pull)(void *ctx, const uint64_t *keys, size_t n, float *rows);
	/* apply the optimizer to the rows of @keys (distinct) with gradients @grads (n x width) */
	int (*hash_push)(void *ctx, const uint64_t *keys, size_t n, const float *grads);
	/* the whole dense variable (n floats) */
	int (*dense_pull)(void *ctx, float *dense, size_t n);
	int (*dense_push)(void *ctx, const float *grad, size_t n);
	/* optional: the trainer finished step @step (0, 1, ...); NULL if not needed */
	int (*step_end)(void *ctx, uint64_t step);
	/* optional: the trainer's pull/push buffer [addr, addr+len), valid until destroy */
	int (*register_buffer)(void *ctx, void *addr, size_t len);
};

struct ctr_train_opts {
	const struct ctr_data *data;	 /* borrowed; outlives the trainer */
	const struct ctr_store_ops *ops; /* borrowed */
	void *ctx;			 /* passed to every op */
	uint32_t width;			 /* embedding width, as declared */
	uint32_t batch;			 /* examples per step, >= 1 */
	uint64_t train_begin;		 /* this worker's examples of the train split: */
	uint64_t train_end;		 /*   [train_begin, train_end) */
	uint64_t test_n;		 /* the test split's examples [0, test_n), >= 1 */
	/* optional: called at the start of a pass (done 0), every few batches and at its end;
	 * phase is "train" or "test" (the same pointers every time) */
	void (*progress)(void *arg, const char *phase, uint64_t done, uint64_t total);
	void *progress_arg;
};

struct ctr_epoch_result {
	uint64_t examples;
	double train_loss; /* mean logistic loss, each batch scored before its own update */
};

struct ctr_eval_result {
	uint64_t examples;
	double click_rate;   /* fraction of positive labels */
	double test_loss;    /* mean logistic loss of the model */
	double auc;	     /* of the model */
	double planted_loss; /* mean logistic loss of the true logits */
	double planted_auc;  /* of the true logits */
};

struct ctr_trainer;

/**
 * ctr_trainer_create() - allocate every buffer and offer them to ops->register_buffer (training
 * allocates nothing afterwards; an evaluation only the AUC's sort array). Returns 0, -EINVAL,
 * -ENOMEM or the store's error.
 */
int ctr_trainer_create(const struct ctr_train_opts *o, struct ctr_trainer **out);

/** ctr_trainer_destroy() - free the trainer. Accepts NULL. */
void ctr_trainer_destroy(struct ctr_trainer *t);

/** ctr_trainer_epoch() - one pass over the train slice. 0 or the store's error. */
int ctr_trainer_epoch(struct ctr_trainer *t, struct ctr_epoch_result *res);

/**
 * ctr_trainer_eval() - the model and the planted model on the test split. 0, the store's
 * error, or -EDOM if the test labels hold one class only.
 */
int ctr_trainer_eval(struct ctr_trainer *t, struct ctr_eval_result *res);

/** ctr_trainer_steps() - training steps done so far (the next step_end argument). */
uint64_t ctr_trainer_steps(const struct ctr_trainer *t);

#endif
