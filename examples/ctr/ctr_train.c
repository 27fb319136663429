/*
 * psplus-ctr training and evaluation loops (ctr_train.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctr_model.h"
#include "ctr_train.h"

/* Report progress every this many batches: often enough for a bar, rare enough to be free. */
#define PROGRESS_EVERY 16

struct ctr_trainer {
	struct ctr_train_opts o;
	uint32_t nfields;
	uint32_t dense_width; /* nfields * width + 1 */
	uint64_t steps;	      /* training steps done */
	struct ctr_batch *batch;
	struct ctr_example ex; /* the example being added (big: keep it off the stack) */
	float *rows;	       /* [cap * nfields * width] pulled rows (at most one per key) */
	float *grad_rows;      /* same size: one summed gradient per distinct key */
	float *dense;	       /* [dense_width] */
	float *grad_dense;     /* [dense_width] */
	float *logits;	       /* [cap] */
	double *test_scores;   /* [test_n] the model's test logits */
	double *test_true;     /* [test_n] the planted logits */
	uint8_t *test_labels;  /* [test_n] */
};

/* Page-aligned, zeroed: the store may register these for zero-copy transfers. */
static void *buf_alloc(size_t len)
{
	void *p;

	if (posix_memalign(&p, 4096, len ? len : 1))
		return NULL;
	memset(p, 0, len);
	return p;
}

int ctr_trainer_create(const struct ctr_train_opts *o, struct ctr_trainer **out)
{
	struct ctr_trainer *t;
	size_t nrows;
	int rc;

	*out = NULL;
	if (!o->data || !o->ops || !o->ops->hash_pull || !o->ops->hash_push ||
	    !o->ops->dense_pull || !o->ops->dense_push || o->width < 1 || o->width > 4096 ||
	    o->batch < 1 || o->batch > (1u << 20) || o->train_begin > o->train_end ||
	    o->test_n < 1 || o->test_n > (UINT64_C(1) << 32))
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->o = *o;
	t->nfields = ctr_data_nfields(o->data);
	t->dense_width = t->nfields * o->width + 1;
	rc = ctr_batch_create(o->batch, t->nfields, &t->batch);
	if (rc)
		goto fail;
	rc = -ENOMEM;
	nrows = (size_t)o->batch * t->nfields;
	t->rows = buf_alloc(sizeof(float) * nrows * o->width);
	t->grad_rows = buf_alloc(sizeof(float) * nrows * o->width);
	t->dense = buf_alloc(sizeof(float) * t->dense_width);
	t->grad_dense = buf_alloc(sizeof(float) * t->dense_width);
	t->logits = malloc(sizeof(float) * o->batch);
	t->test_scores = malloc(sizeof(double) * o->test_n);
	t->test_true = malloc(sizeof(double) * o->test_n);
	t->test_labels = malloc(o->test_n);
	if (!t->rows || !t->grad_rows || !t->dense || !t->grad_dense || !t->logits ||
	    !t->test_scores || !t->test_true || !t->test_labels)
		goto fail;
	if (o->ops->register_buffer) {
		rc = o->ops->register_buffer(o->ctx, t->rows, sizeof(float) * nrows * o->width);
		if (!rc)
			rc = o->ops->register_buffer(o->ctx, t->grad_rows,
						     sizeof(float) * nrows * o->width);
		if (!rc)
			rc = o->ops->register_buffer(o->ctx, t->dense,
						     sizeof(float) * t->dense_width);
		if (!rc)
			rc = o->ops->register_buffer(o->ctx, t->grad_dense,
						     sizeof(float) * t->dense_width);
		if (rc)
			goto fail;
	}
	*out = t;
	return 0;
fail:
	ctr_trainer_destroy(t);
	return rc;
}

void ctr_trainer_destroy(struct ctr_trainer *t)
{
	if (!t)
		return;
	ctr_batch_destroy(t->batch);
	free(t->rows);
	free(t->grad_rows);
	free(t->dense);
	free(t->grad_dense);
	free(t->logits);
	free(t->test_scores);
	free(t->test_true);
	free(t->test_labels);
	free(t);
}

uint64_t ctr_trainer_steps(const struct ctr_trainer *t)
{
	return t->steps;
}

/* Fill the batch with examples [begin, end) of @split (end - begin <= cap). */
static void fill_batch(struct ctr_trainer *t, enum ctr_split split, uint64_t begin, uint64_t end)
{
	ctr_batch_reset(t->batch);
	for (uint64_t i = begin; i < end; i++) {
		ctr_data_example(t->o.data, split, i, &t->ex);
		ctr_batch_add(t->batch, &t->ex);
	}
}

/* Pull the batch's rows and the dense layer, then compute the logits. */
static int pull_forward(struct ctr_trainer *t)
{
	const struct ctr_store_ops *ops = t->o.ops;
	int rc;

	rc = ops->hash_pull(t->o.ctx, t->batch->keys, t->batch->nuniq, t->rows);
	if (!rc)
		rc = ops->dense_pull(t->o.ctx, t->dense, t->dense_width);
	if (rc)
		return rc;
	ctr_model_forward(t->batch, t->o.width, t->rows, t->dense, t->logits);
	return 0;
}

static void progress(struct ctr_trainer *t, const char *phase, uint64_t batches, uint64_t done,
		     uint64_t total)
{
	if (t->o.progress && (batches % PROGRESS_EVERY == 0 || done == total))
		t->o.progress(t->o.progress_arg, phase, done, total);
}

int ctr_trainer_epoch(struct ctr_trainer *t, struct ctr_epoch_result *res)
{
	const struct ctr_store_ops *ops = t->o.ops;
	uint64_t total = t->o.train_end - t->o.train_begin, done = 0, batches = 0;
	double loss = 0;
	int rc;

	memset(res, 0, sizeof(*res));
	if (t->o.progress)
		t->o.progress(t->o.progress_arg, "train", 0, total);
	while (done < total) {
		uint64_t n = total - done < t->o.batch ? total - done : t->o.batch;
		uint64_t begin = t->o.train_begin + done;

		fill_batch(t, CTR_TRAIN, begin, begin + n);
		rc = pull_forward(t);
		if (rc)
			return rc;
		loss += ctr_model_backward(t->batch, t->o.width, t->rows, t->dense, t->logits,
					   t->grad_rows, t->grad_dense);
		rc = ops->hash_push(t->o.ctx, t->batch->keys, t->batch->nuniq, t->grad_rows);
		if (!rc)
			rc = ops->dense_push(t->o.ctx, t->grad_dense, t->dense_width);
		if (!rc && ops->step_end)
			rc = ops->step_end(t->o.ctx, t->steps);
		if (rc)
			return rc;
		t->steps++;
		done += n;
		progress(t, "train", ++batches, done, total);
	}
	res->examples = total;
	res->train_loss = total ? loss / (double)total : 0;
	return 0;
}

int ctr_trainer_eval(struct ctr_trainer *t, struct ctr_eval_result *res)
{
	uint64_t total = t->o.test_n, done = 0, batches = 0, pos = 0;
	double loss = 0, true_loss = 0;
	int rc;

	memset(res, 0, sizeof(*res));
	if (t->o.progress)
		t->o.progress(t->o.progress_arg, "test", 0, total);
	while (done < total) {
		uint64_t n = total - done < t->o.batch ? total - done : t->o.batch;
		struct ctr_batch *b = t->batch;

		fill_batch(t, CTR_TEST, done, done + n);
		rc = pull_forward(t);
		if (rc)
			return rc;
		for (uint32_t i = 0; i < b->n; i++) {
			t->test_scores[done + i] = t->logits[i];
			t->test_true[done + i] = b->true_logit[i];
			t->test_labels[done + i] = b->labels[i];
			loss += ctr_logloss(t->logits[i], b->labels[i]);
			true_loss += ctr_logloss(b->true_logit[i], b->labels[i]);
			pos += b->labels[i];
		}
		done += n;
		progress(t, "test", ++batches, done, total);
	}
	rc = ctr_auc(t->test_scores, t->test_labels, total, &res->auc);
	if (!rc)
		rc = ctr_auc(t->test_true, t->test_labels, total, &res->planted_auc);
	if (rc)
		return rc;
	res->examples = total;
	res->click_rate = (double)pos / (double)total;
	res->test_loss = loss / (double)total;
	res->planted_loss = true_loss / (double)total;
	return 0;
}
