/*
 * psplus-ctr: the synthetic click-through data with a planted true model.
 *
 * Every example has CTR fields (categorical features). Field f draws an id in [0, vocab[f])
 * from a Zipf law (rank r has probability proportional to 1 / (r + 1)^zipf_s, the head of a
 * real CTR feature) and the id becomes a 64-bit key with the field mixed in, so equal ids of
 * different fields are different keys. The planted model gives every key a true weight drawn
 * from normal(0, sigma) and a true logit
 *
 *	logit = bias + sum over fields of weight(key_f)
 *
 * and the label is Bernoulli(sigmoid(logit)). The best any model can do on these features is
 * to know the true weights, so the AUC of the true logits on the test set ("planted AUC") is
 * the ceiling a trained model is measured against.
 *
 * Everything is counter-based: example i of a split, the key of (field, id) and the weight of
 * a key are pure functions of (seed, split, i) and (seed, key). Nothing is stored but the Zipf
 * tables; any worker can generate any slice, in any order, and get the same examples.
 */
#ifndef PS_EXAMPLES_CTR_DATA_H
#define PS_EXAMPLES_CTR_DATA_H

#include <stdint.h>

#define CTR_MAX_FIELDS 32

/** The two splits; a different random stream each, so they share no example. */
enum ctr_split {
	CTR_TRAIN = 0,
	CTR_TEST = 1,
};

struct ctr_data_opts {
	uint64_t seed;			/* any value: the whole data set follows from it */
	uint32_t nfields;		/* 1..CTR_MAX_FIELDS */
	uint32_t vocab[CTR_MAX_FIELDS]; /* ids of field f, >= 1 */
	double zipf_s;			/* Zipf exponent, >= 0 (0: uniform) */
	double sigma;			/* stddev of a key's true weight, >= 0 */
	double bias;			/* the true logit's constant */
};

/** One example: a key per field, the label, and the planted model's logit. */
struct ctr_example {
	uint64_t keys[CTR_MAX_FIELDS];
	double true_logit;
	uint8_t label; /* 0 or 1 */
};

struct ctr_data;

/**
 * ctr_data_opts_default() - the demo's data set: 8 fields whose vocabularies go from 1,000 to
 * 100,000 ids, Zipf exponent 1.5, sigma 0.55 and bias -1.0, seed 1 (a planted AUC of 0.78 to
 * 0.81 and a click rate of 20 to 40 % depending on the seed).
 */
struct ctr_data_opts ctr_data_opts_default(void);

/**
 * ctr_data_create() - build the Zipf tables of @o (copied). Returns 0, -EINVAL (bad options:
 * no field, too many, an empty vocabulary, a negative exponent or sigma) or -ENOMEM.
 */
int ctr_data_create(const struct ctr_data_opts *o, struct ctr_data **out);

/** ctr_data_destroy() - free the tables. Accepts NULL. */
void ctr_data_destroy(struct ctr_data *d);

/** ctr_data_nfields() - the field count. */
uint32_t ctr_data_nfields(const struct ctr_data *d);

/** ctr_data_key() - the key of @id in @field. */
uint64_t ctr_data_key(const struct ctr_data *d, uint32_t field, uint32_t id);

/** ctr_data_weight() - the planted weight of @key. */
double ctr_data_weight(const struct ctr_data *d, uint64_t key);

/**
 * ctr_data_example() - example @index of @split into @out. Thread-safe (reads only the
 * tables).
 */
void ctr_data_example(const struct ctr_data *d, enum ctr_split split, uint64_t index,
		      struct ctr_example *out);

#endif
