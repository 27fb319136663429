/*
 * psplus-ctr: the model's math, with no parameter server in it.
 *
 * The model: every key has an embedding row of @width floats (a PS_VAR_HASH64 variable); the
 * rows of an example's fields are concatenated (nfields x width) and a dense layer turns them
 * into a logit:
 *
 *	z = dense[nfields * width] + sum over f, j of dense[f * width + j] * row(key_f)[j]
 *
 * so the dense variable is one row of nfields * width + 1 floats, the bias last. The loss is
 * the logistic loss log(1 + exp(-z)) for a click and log(1 + exp(z)) otherwise.
 *
 * A mini-batch is deduplicated first (struct ctr_batch): each distinct key is pulled once, and
 * its gradient is the sum over every occurrence in the batch, which is what a server's sparse
 * apply expects. Gradients are sums over the batch, not means: Adagrad and Adam are invariant
 * to the scale of the gradient, and a sum keeps the gradient of a rare key (one occurrence in
 * the batch) as large as that of a frequent one, as per-key adaptive optimizers intend.
 */
#ifndef PS_EXAMPLES_CTR_MODEL_H
#define PS_EXAMPLES_CTR_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "ctr_data.h"

/*
 * The demo's model and optimizer defaults, shared by psplus-ctr and its unit test. An
 * embedding starts small (its weight is learned from the data); the dense layer starts at the
 * scale of 1 / sqrt(width) so that the first gradients reaching the embeddings are not
 * vanishingly small (the logit is a product of the two).
 */
#define CTR_DEFAULT_WIDTH      8
#define CTR_EMB_INIT_STDDEV    0.05f
#define CTR_DENSE_INIT_STDDEV  0.3f
#define CTR_DEFAULT_ADAGRAD_LR 0.05f
#define CTR_DEFAULT_ADAM_LR    0.003f

/**
 * struct ctr_batch - up to @cap examples with their keys deduplicated.
 *
 * Built by ctr_batch_add() one example at a time; everything is allocated by
 * ctr_batch_create() for @cap examples, so building a batch allocates nothing.
 */
struct ctr_batch {
	uint32_t cap;	    /* examples it can hold */
	uint32_t nfields;   /* keys per example */
	uint32_t n;	    /* examples in the batch */
	uint32_t nuniq;	    /* distinct keys */
	uint64_t *keys;	    /* [nuniq] the distinct keys, in first-seen order */
	uint32_t *slot;	    /* [n * nfields] example i, field f -> index into keys */
	uint8_t *labels;    /* [n] */
	double *true_logit; /* [n] the planted model's logits */
	uint32_t *table;    /* open addressing: 0 empty, else keys index + 1 */
	uint32_t mask;	    /* table size - 1 (a power of two >= 2 * cap * nfields) */
};

/** ctr_batch_create() - room for @cap examples of @nfields. 0, -EINVAL or -ENOMEM. */
int ctr_batch_create(uint32_t cap, uint32_t nfields, struct ctr_batch **out);

/** ctr_batch_destroy() - free the batch. Accepts NULL. */
void ctr_batch_destroy(struct ctr_batch *b);

/** ctr_batch_reset() - empty the batch (the cost is the table size, not cap). */
void ctr_batch_reset(struct ctr_batch *b);

/** ctr_batch_add() - append @ex; the caller keeps n < cap. */
void ctr_batch_add(struct ctr_batch *b, const struct ctr_example *ex);

/** ctr_model_dense_width() - floats of the dense variable: nfields * width + 1. */
static inline uint32_t ctr_model_dense_width(uint32_t nfields, uint32_t width)
{
	return nfields * width + 1;
}

/**
 * ctr_model_forward() - the logit of every example of @b into @logits[0..n).
 * @rows: nuniq x width, the rows of b->keys; @dense: ctr_model_dense_width() floats.
 */
void ctr_model_forward(const struct ctr_batch *b, uint32_t width, const float *rows,
		       const float *dense, float *logits);

/**
 * ctr_model_backward() - the gradients of the summed loss of @b, given @logits from
 * ctr_model_forward(). Writes (not adds) @grad_rows (nuniq x width, one summed row per distinct
 * key) and @grad_dense. Returns the summed loss.
 */
double ctr_model_backward(const struct ctr_batch *b, uint32_t width, const float *rows,
			  const float *dense, const float *logits, float *grad_rows,
			  float *grad_dense);

/** ctr_logloss() - the logistic loss of @logit for @label, without overflow at any logit. */
double ctr_logloss(double logit, int label);

/**
 * ctr_auc() - the exact area under the ROC curve of @scores against @labels (n of each).
 *
 * The Mann-Whitney statistic: the probability that a random positive scores above a random
 * negative, ties counting one half (tied scores get their average rank). Sorting costs
 * O(n log n) and n indices of memory. Returns 0, -ENOMEM, or -EDOM when the labels hold only
 * one class (the AUC is undefined).
 */
int ctr_auc(const double *scores, const uint8_t *labels, size_t n, double *auc);

#endif
