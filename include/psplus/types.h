/*
 * psplus: what a variable is.
 *
 * The structs a worker fills to declare a variable (kind, element type, shape, initializer,
 * optimizer and its hyper-parameters), and the key -> bucket hash that clients and servers
 * must compute identically to route hash-variable keys. Everything here is plain data: no
 * handles, no allocation, safe to copy and to use from any thread.
 *
 * Semantics of every field (formulas, slot layout, random streams) are in
 * docs/server-storage.md; this header states the contract in short.
 */
#ifndef PSPLUS_TYPES_H
#define PSPLUS_TYPES_H

#include <stdbool.h>
#include <stdint.h>

#include <psplus/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Kinds of variables. */
enum ps_var_kind {
	/** A [rows x width] tensor pulled and pushed whole (rows may be 1). */
	PS_VAR_DENSE = 0,
	/** A [rows x width] table addressed by row id in [0, rows). */
	PS_VAR_SPARSE = 1,
	/** 64-bit key -> row of width; rows are created on first pull or push. */
	PS_VAR_HASH64 = 2,
	/** 128-bit key (struct ps_key128) -> row of width; as PS_VAR_HASH64 otherwise. */
	PS_VAR_HASH128 = 3,
};

/** Element types. Only float32 exists today; the field is there so the wire need not change. */
enum ps_dtype {
	PS_DTYPE_FLOAT32 = 0,
};

/** A 128-bit hash-variable key; 16 bytes, no padding, little-endian words on the wire. */
struct ps_key128 {
	uint64_t lo;
	uint64_t hi;
};

/*
 * ---- initializers ------------------------------------------------------------------------
 *
 * The value of element (row or key, column) depends only on (seed, variable id, row id or key,
 * column): a counter-based generator, so the same seed gives the same table whatever the number
 * of servers and parts holding it, and whatever order rows are touched in.
 */
enum ps_init_kind {
	PS_INIT_ZEROS = 0,
	PS_INIT_CONSTANT = 1,	      /* value */
	PS_INIT_UNIFORM = 2,	      /* [min, max) */
	PS_INIT_NORMAL = 3,	      /* mean, stddev */
	PS_INIT_TRUNCATED_NORMAL = 4, /* mean, stddev; draws beyond 2 stddev are re-drawn (TF) */
};

struct ps_initializer {
	enum ps_init_kind kind;
	float value; /* PS_INIT_CONSTANT */
	float min;   /* PS_INIT_UNIFORM: min < max */
	float max;
	float mean; /* PS_INIT_NORMAL, PS_INIT_TRUNCATED_NORMAL: stddev >= 0 */
	float stddev;
	uint64_t seed; /* any value; 0 is a valid seed */
};

/*
 * ---- optimizers ----------------------------------------------------------------------------
 *
 * Applied by the server on push, with TensorFlow's raw-op formulas (ApplyGradientDescent,
 * ApplyMomentum, ApplyAdagrad, ApplyAdam, ApplyRMSProp, ApplyCenteredRMSProp, ApplyFtrl,
 * ApplyFtrlV2). Hyper-parameters are float32, as TF casts them to the variable's type. Each
 * optimizer keeps its slots beside every row: the slot count is given per kind below.
 */
enum ps_optim_kind {
	PS_OPTIM_SGD = 0,	       /* no slots */
	PS_OPTIM_MOMENTUM = 1,	       /* slots: accum */
	PS_OPTIM_ADAGRAD = 2,	       /* slots: accum */
	PS_OPTIM_ADAM = 3,	       /* slots: m, v */
	PS_OPTIM_RMSPROP = 4,	       /* slots: ms, mom */
	PS_OPTIM_CENTERED_RMSPROP = 5, /* slots: ms, mom, mg */
	PS_OPTIM_FTRL = 6,	       /* slots: accum, linear */
};

/** The largest slot count of any optimizer (centered RMSProp). */
#define PS_OPTIM_MAX_SLOTS 3

struct ps_optim_sgd {
	float learning_rate;
};

struct ps_optim_momentum {
	float learning_rate;
	float momentum;
	bool use_nesterov;
};

struct ps_optim_adagrad {
	float learning_rate;
	float initial_accumulator_value; /* > 0; TF1 default 0.1 */
};

struct ps_optim_adam {
	float learning_rate;
	float beta1;   /* [0, 1) */
	float beta2;   /* [0, 1) */
	float epsilon; /* >= 0 */
	bool use_nesterov;
};

/** For PS_OPTIM_RMSPROP and PS_OPTIM_CENTERED_RMSPROP. */
struct ps_optim_rmsprop {
	float learning_rate;
	float rho;	  /* "decay", [0, 1] */
	float momentum;	  /* >= 0 */
	float epsilon;	  /* >= 0 */
	float initial_ms; /* start of the ms slot: TF1 RMSPropOptimizer uses 1.0, Keras 0.0 */
};

struct ps_optim_ftrl {
	float learning_rate;		 /* > 0 */
	float learning_rate_power;	 /* <= 0; -0.5 takes a sqrt fast path */
	float l1;			 /* >= 0 */
	float l2;			 /* >= 0 */
	float l2_shrinkage;		 /* >= 0; > 0 selects the FtrlV2 formula */
	float initial_accumulator_value; /* >= 0; TF1 default 0.1 */
};

struct ps_optimizer {
	enum ps_optim_kind kind;
	union {
		struct ps_optim_sgd sgd;
		struct ps_optim_momentum momentum;
		struct ps_optim_adagrad adagrad;
		struct ps_optim_adam adam;
		struct ps_optim_rmsprop rmsprop; /* both RMSProp kinds */
		struct ps_optim_ftrl ftrl;
	};
};

/**
 * ps_optimizer_defaults() - @kind with TensorFlow 1 (tf.train) default hyper-parameters.
 *
 * learning_rate 0.001 (0.01 for SGD and momentum, which TF leaves to the caller), momentum 0.9,
 * Adam beta1 0.9 / beta2 0.999 / epsilon 1e-8, RMSProp rho 0.9 / momentum 0 / epsilon 1e-10 /
 * initial_ms 1.0, Adagrad and FTRL initial_accumulator_value 0.1, FTRL power -0.5 and no
 * regularisation. An unknown kind gives SGD.
 */
static inline struct ps_optimizer ps_optimizer_defaults(enum ps_optim_kind kind)
{
	struct ps_optimizer o = {.kind = kind};

	switch (kind) {
	case PS_OPTIM_MOMENTUM:
		o.momentum.learning_rate = 0.01f;
		o.momentum.momentum = 0.9f;
		break;
	case PS_OPTIM_ADAGRAD:
		o.adagrad.learning_rate = 0.001f;
		o.adagrad.initial_accumulator_value = 0.1f;
		break;
	case PS_OPTIM_ADAM:
		o.adam.learning_rate = 0.001f;
		o.adam.beta1 = 0.9f;
		o.adam.beta2 = 0.999f;
		o.adam.epsilon = 1e-8f;
		break;
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_CENTERED_RMSPROP:
		o.rmsprop.learning_rate = 0.001f;
		o.rmsprop.rho = 0.9f;
		o.rmsprop.epsilon = 1e-10f;
		o.rmsprop.initial_ms = 1.0f;
		break;
	case PS_OPTIM_FTRL:
		o.ftrl.learning_rate = 0.001f;
		o.ftrl.learning_rate_power = -0.5f;
		o.ftrl.initial_accumulator_value = 0.1f;
		break;
	default:
		o.kind = PS_OPTIM_SGD;
		o.sgd.learning_rate = 0.01f;
		break;
	}
	return o;
}

/*
 * ---- variables -------------------------------------------------------------------------------
 */

/** Everything a worker declares about a variable; the server parts are built from it. */
struct ps_var_spec {
	enum ps_var_kind kind;
	enum ps_dtype dtype;
	uint64_t rows;	/* dense and sparse: row count, >= 1; hash: unused */
	uint32_t width; /* floats per row, >= 1 */
	struct ps_initializer init;
	struct ps_optimizer optim;
	/*
	 * Hash admission: a key seen for the first time is admitted (gets a row) with probability
	 * admit_prob, decided by (admit_seed, key) alone so that every replica and every retry
	 * agrees. A key not admitted reads as the initializer's value and its gradients are
	 * dropped. 0 (the zero value) and 1 both mean "admit every key".
	 */
	float admit_prob;
	uint64_t admit_seed;
};

/*
 * ---- hash routing ----------------------------------------------------------------------------
 *
 * A hash variable's key goes to one of PS_HASH_BUCKETS buckets; a variable part holds a
 * contiguous bucket range. Clients and servers must compute this identically, so it is fixed
 * forever (changing it would re-route every key of every stored model):
 *
 *	mix64(z):  z ^= z >> 30; z *= 0xbf58476d1ce4e5b9;
 *	           z ^= z >> 27; z *= 0x94d049bb133111eb;
 *	           z ^= z >> 31                       (the splitmix64 finaliser, mod 2^64)
 *	bucket64(key)     = mix64(key) mod 65536
 *	bucket128(lo, hi) = mix64(lo ^ mix64(hi)) mod 65536
 *
 * mix64(0) = 0, so a 128-bit key with hi = 0 goes to the same bucket as the 64-bit key lo.
 */
#define PS_HASH_BUCKETS 65536u

/** ps_mix64() - the splitmix64 finaliser: a bijection of 64-bit words with full avalanche. */
static inline uint64_t ps_mix64(uint64_t z)
{
	z ^= z >> 30;
	z *= 0xbf58476d1ce4e5b9ull;
	z ^= z >> 27;
	z *= 0x94d049bb133111ebull;
	z ^= z >> 31;
	return z;
}

/** ps_hash_bucket64() - the bucket, in [0, PS_HASH_BUCKETS), of a 64-bit key. */
static inline uint32_t ps_hash_bucket64(uint64_t key)
{
	return (uint32_t)(ps_mix64(key) % PS_HASH_BUCKETS);
}

/** ps_hash_bucket128() - the bucket, in [0, PS_HASH_BUCKETS), of a 128-bit key. */
static inline uint32_t ps_hash_bucket128(uint64_t lo, uint64_t hi)
{
	return (uint32_t)(ps_mix64(lo ^ ps_mix64(hi)) % PS_HASH_BUCKETS);
}

#ifdef __cplusplus
}
#endif

#endif
