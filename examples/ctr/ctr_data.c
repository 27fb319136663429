/*
 * psplus-ctr data: Zipf tables, counter-based random streams, the planted model.
 * The design is in ctr_data.h.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/types.h>

#include "ctr_data.h"

/* Stream tags, mixed into the counter so the streams never overlap. */
#define TAG_KEY	   0x6b6579ull	     /* "key" */
#define TAG_WEIGHT 0x776569676874ull /* "weight" */
#define TAG_SPLIT  0x73706c6974ull   /* "split" */

struct ctr_data {
	struct ctr_data_opts o;
	uint64_t key_salt;	     /* mixes the seed into every key */
	uint64_t weight_salt;	     /* and into every weight */
	double *cdf[CTR_MAX_FIELDS]; /* field f: cdf[f][r] = P(rank <= r), last entry 1 */
};

struct ctr_data_opts ctr_data_opts_default(void)
{
	/*
	 * Vocabularies of mixed size, as in real logs (an ad category next to a user id). The
	 * Zipf exponent 1.5 puts most of the traffic on a head of a few hundred ids per field, as
	 * in real logs; with a flatter law (1.1) the 200,000 examples leave so many ids seen once
	 * or twice that even a Bayes-optimal estimate of the weights stays 0.03 below the planted
	 * AUC (Gaussian approximation: an id seen n times keeps a posterior variance of
	 * 1 / (1 / sigma^2 + 0.22 n)); with 1.5 that bound is 0.008 and Adagrad gets within 0.012.
	 */
	static const uint32_t vocab[8] = {1000, 2000, 5000, 10000, 10000, 20000, 50000, 100000};
	struct ctr_data_opts o = {
		.seed = 1,
		.nfields = 8,
		.zipf_s = 1.5,
		.sigma = 0.55,
		.bias = -1.0,
	};

	memcpy(o.vocab, vocab, sizeof(vocab));
	return o;
}

/* A uniform double in [0, 1) from a 64-bit word: its top 53 bits. */
static double unit(uint64_t x)
{
	return (double)(x >> 11) * 0x1.0p-53;
}

/* A standard normal from two words (Box-Muller; 1 - u keeps the log finite). */
static double normal(uint64_t a, uint64_t b)
{
	double u1 = 1.0 - unit(a), u2 = unit(b);

	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

int ctr_data_create(const struct ctr_data_opts *o, struct ctr_data **out)
{
	struct ctr_data *d;

	*out = NULL;
	if (o->nfields < 1 || o->nfields > CTR_MAX_FIELDS || !(o->zipf_s >= 0) ||
	    !(o->sigma >= 0) || !isfinite(o->bias))
		return -EINVAL;
	for (uint32_t f = 0; f < o->nfields; f++)
		if (o->vocab[f] < 1)
			return -EINVAL;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->o = *o;
	d->key_salt = ps_mix64(o->seed ^ ps_mix64(TAG_KEY));
	d->weight_salt = ps_mix64(o->seed ^ ps_mix64(TAG_WEIGHT));
	for (uint32_t f = 0; f < o->nfields; f++) {
		uint32_t v = o->vocab[f];
		double sum = 0;

		d->cdf[f] = malloc(sizeof(double) * v);
		if (!d->cdf[f]) {
			ctr_data_destroy(d);
			return -ENOMEM;
		}
		for (uint32_t r = 0; r < v; r++) {
			sum += pow(r + 1.0, -o->zipf_s);
			d->cdf[f][r] = sum;
		}
		for (uint32_t r = 0; r < v; r++)
			d->cdf[f][r] /= sum;
		d->cdf[f][v - 1] = 1.0; /* no rounding gap at the top */
	}
	*out = d;
	return 0;
}

void ctr_data_destroy(struct ctr_data *d)
{
	if (!d)
		return;
	for (uint32_t f = 0; f < CTR_MAX_FIELDS; f++)
		free(d->cdf[f]);
	free(d);
}

uint32_t ctr_data_nfields(const struct ctr_data *d)
{
	return d->o.nfields;
}

uint64_t ctr_data_key(const struct ctr_data *d, uint32_t field, uint32_t id)
{
	/* mix64 is a bijection and (field, id) fit in distinct bits: no two features collide. */
	return ps_mix64(d->key_salt ^ ((uint64_t)field << 40 | id));
}

double ctr_data_weight(const struct ctr_data *d, uint64_t key)
{
	uint64_t a = ps_mix64(d->weight_salt ^ key);

	return d->o.sigma * normal(a, ps_mix64(a ^ TAG_WEIGHT));
}

/* The rank whose cdf interval holds @u: the first r with cdf[r] > u. */
static uint32_t zipf_rank(const double *cdf, uint32_t v, double u)
{
	uint32_t lo = 0, hi = v - 1;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (cdf[mid] > u)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

void ctr_data_example(const struct ctr_data *d, enum ctr_split split, uint64_t index,
		      struct ctr_example *out)
{
	/* One counter per example; draw j of the example is mix64(base + j). */
	uint64_t base = ps_mix64(ps_mix64(d->o.seed ^ TAG_SPLIT ^ ((uint64_t)split << 56)) ^
				 ps_mix64(index + 1));
	double logit = d->o.bias;
	uint32_t f;

	for (f = 0; f < d->o.nfields; f++) {
		uint32_t id = zipf_rank(d->cdf[f], d->o.vocab[f], unit(ps_mix64(base + f)));

		out->keys[f] = ctr_data_key(d, f, id);
		logit += ctr_data_weight(d, out->keys[f]);
	}
	out->true_logit = logit;
	out->label = unit(ps_mix64(base + f)) < 1.0 / (1.0 + exp(-logit));
}
