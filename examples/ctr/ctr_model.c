/*
 * psplus-ctr model math: batch deduplication, forward, backward, logistic loss, exact AUC.
 * The model is described in ctr_model.h.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/types.h>

#include "ctr_model.h"

int ctr_batch_create(uint32_t cap, uint32_t nfields, struct ctr_batch **out)
{
	struct ctr_batch *b;
	size_t nkeys = (size_t)cap * nfields, tsize = 16;

	*out = NULL;
	if (cap < 1 || nfields < 1 || nfields > CTR_MAX_FIELDS || nkeys > UINT32_MAX / 4)
		return -EINVAL;
	/* Load at most one half: probes stay short even when every key is distinct. */
	while (tsize < 2 * nkeys)
		tsize *= 2;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->cap = cap;
	b->nfields = nfields;
	b->mask = (uint32_t)(tsize - 1);
	b->keys = malloc(sizeof(*b->keys) * nkeys);
	b->slot = malloc(sizeof(*b->slot) * nkeys);
	b->labels = malloc(sizeof(*b->labels) * cap);
	b->true_logit = malloc(sizeof(*b->true_logit) * cap);
	b->table = calloc(tsize, sizeof(*b->table));
	if (!b->keys || !b->slot || !b->labels || !b->true_logit || !b->table) {
		ctr_batch_destroy(b);
		return -ENOMEM;
	}
	*out = b;
	return 0;
}

void ctr_batch_destroy(struct ctr_batch *b)
{
	if (!b)
		return;
	free(b->keys);
	free(b->slot);
	free(b->labels);
	free(b->true_logit);
	free(b->table);
	free(b);
}

void ctr_batch_reset(struct ctr_batch *b)
{
	memset(b->table, 0, sizeof(*b->table) * ((size_t)b->mask + 1));
	b->n = 0;
	b->nuniq = 0;
}

/* The index in b->keys of @key, appending it on first sight. */
static uint32_t batch_intern(struct ctr_batch *b, uint64_t key)
{
	uint32_t h = (uint32_t)ps_mix64(key) & b->mask;

	for (;; h = (h + 1) & b->mask) {
		uint32_t e = b->table[h];

		if (!e) {
			b->keys[b->nuniq] = key;
			b->table[h] = ++b->nuniq;
			return b->nuniq - 1;
		}
		if (b->keys[e - 1] == key)
			return e - 1;
	}
}

void ctr_batch_add(struct ctr_batch *b, const struct ctr_example *ex)
{
	uint32_t i = b->n++;

	for (uint32_t f = 0; f < b->nfields; f++)
		b->slot[(size_t)i * b->nfields + f] = batch_intern(b, ex->keys[f]);
	b->labels[i] = ex->label;
	b->true_logit[i] = ex->true_logit;
}

void ctr_model_forward(const struct ctr_batch *b, uint32_t width, const float *rows,
		       const float *dense, float *logits)
{
	const uint32_t nf = b->nfields;
	const float bias = dense[nf * width];

	for (uint32_t i = 0; i < b->n; i++) {
		float z = bias;

		for (uint32_t f = 0; f < nf; f++) {
			const float *row = rows + (size_t)b->slot[(size_t)i * nf + f] * width;
			const float *w = dense + f * width;

			for (uint32_t j = 0; j < width; j++)
				z += w[j] * row[j];
		}
		logits[i] = z;
	}
}

double ctr_logloss(double logit, int label)
{
	/* log(1 + exp(-m)) with m the signed margin, written so exp never overflows. */
	double m = label ? logit : -logit;

	return m > 0 ? log1p(exp(-m)) : -m + log1p(exp(m));
}

double ctr_model_backward(const struct ctr_batch *b, uint32_t width, const float *rows,
			  const float *dense, const float *logits, float *grad_rows,
			  float *grad_dense)
{
	const uint32_t nf = b->nfields;
	double loss = 0, gbias = 0;

	memset(grad_rows, 0, sizeof(float) * (size_t)b->nuniq * width);
	memset(grad_dense, 0, sizeof(float) * nf * width);
	for (uint32_t i = 0; i < b->n; i++) {
		/* d loss / d z = sigmoid(z) - label. */
		float dz = (float)(1.0 / (1.0 + exp(-(double)logits[i])) - b->labels[i]);

		loss += ctr_logloss(logits[i], b->labels[i]);
		gbias += dz;
		for (uint32_t f = 0; f < nf; f++) {
			size_t u = b->slot[(size_t)i * nf + f];
			const float *row = rows + u * width;
			const float *w = dense + f * width;
			float *grow = grad_rows + u * width, *gw = grad_dense + f * width;

			for (uint32_t j = 0; j < width; j++) {
				grow[j] += dz * w[j];
				gw[j] += dz * row[j];
			}
		}
	}
	grad_dense[nf * width] = (float)gbias;
	return loss;
}

/* qsort context: C11 qsort has none, so the scores travel with the indices. */
struct scored {
	double score;
	uint8_t label;
};

static int scored_cmp(const void *pa, const void *pb)
{
	const struct scored *a = pa, *b = pb;

	return (a->score > b->score) - (a->score < b->score);
}

int ctr_auc(const double *scores, const uint8_t *labels, size_t n, double *auc)
{
	struct scored *s;
	double npos = 0, rank_sum = 0;
	size_t i = 0;

	s = malloc(sizeof(*s) * (n ? n : 1));
	if (!s)
		return -ENOMEM;
	for (size_t k = 0; k < n; k++) {
		s[k].score = scores[k];
		s[k].label = labels[k] != 0;
		npos += s[k].label;
	}
	if (npos == 0 || npos == (double)n) {
		free(s);
		return -EDOM;
	}
	qsort(s, n, sizeof(*s), scored_cmp);
	/* Ranks are 1-based; a run of equal scores [i, j) shares the rank (i + 1 + j) / 2. */
	while (i < n) {
		size_t j = i + 1;
		double pos = s[i].label;

		while (j < n && s[j].score == s[i].score)
			pos += s[j++].label;
		rank_sum += pos * ((double)(i + 1 + j) / 2.0);
		i = j;
	}
	free(s);
	*auc = (rank_sum - npos * (npos + 1) / 2.0) / (npos * ((double)n - npos));
	return 0;
}
