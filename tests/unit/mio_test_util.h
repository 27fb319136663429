/*
 * Test helpers for model_io: a small in-memory model (every kind, with slots) that can be
 * saved as a checkpoint, loaded back from one, changed, and compared; temp folders.
 */
#ifndef PS_TESTS_MIO_TEST_UTIL_H
#define PS_TESTS_MIO_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <psplus/types.h>

#define TM_MAX_VARS 8

struct tvar {
	char name[256];
	uint64_t id;
	struct ps_var_spec spec;
	uint32_t nslots;
	size_t n, cap;
	uint64_t *lo, *hi; /* row id or key */
	float *data;	   /* n x (1 + nslots) x width */
};

struct tmodel {
	size_t nvars;
	struct tvar vars[TM_MAX_VARS];
};

/** A deterministic pseudo-random stream. */
uint64_t tm_rand(uint64_t *s);
float tm_randf(uint64_t *s);

/** tm_add_var() - add a variable; dense/sparse get rows 0..rows-1 filled from @seed. */
struct tvar *tm_add_var(struct tmodel *m, const char *name, uint64_t id, enum ps_var_kind kind,
			uint64_t rows, uint32_t width, enum ps_optim_kind optim, uint64_t *seed);
/** Floats per row of @v. */
size_t tv_nf(const struct tvar *v);
/** Index of (lo, hi) in @v, or -1. */
long tv_find(const struct tvar *v, uint64_t lo, uint64_t hi);
/** Set a whole row (value + slots). */
void tv_set(struct tvar *v, uint64_t lo, uint64_t hi, const float *row);
/** Remove a row; returns whether it was present. */
bool tv_del(struct tvar *v, uint64_t lo, uint64_t hi);
/** Add @n random hash keys with random rows. */
void tv_add_random_keys(struct tvar *v, size_t n, uint64_t *seed);

void tm_free(struct tmodel *m);

/**
 * tm_save() - commit @m as checkpoint @name under @root, each variable split into @nparts
 * parts of equal row / bucket ranges. Returns 0 or the failing call's code.
 */
int tm_save(const struct tmodel *m, const char *root, const char *name, unsigned nparts);

/** tm_load() - read every part of a listed checkpoint into @m (which must be zeroed). */
int tm_load(const char *root, const char *name, struct tmodel *m);

/** tm_equal() - same variables and the same rows (any order), bit for bit. */
bool tm_equal(const struct tmodel *a, const struct tmodel *b);

/** A fresh temp folder under $TMPDIR (or /tmp), returned in @buf. */
void tm_tmpdir(char *buf, size_t len, const char *tag);
/** rm -rf @path. */
void tm_rmrf(const char *path);
/** Copy @src to @dst, truncated to @len bytes (SIZE_MAX: whole). Returns the source size. */
size_t tm_copy_file(const char *src, const char *dst, size_t len);
/** XOR the byte at @off of @path with @mask. */
void tm_flip_byte(const char *path, size_t off, uint8_t mask);
/** Size of @path, or 0. */
size_t tm_file_size(const char *path);

#endif
