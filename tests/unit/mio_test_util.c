/*
 * Test helpers for model_io (see mio_test_util.h).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_io/ckpt.h"
#include "tests/unit/mio_test_util.h"

uint64_t tm_rand(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return ps_mix64(*s);
}

float tm_randf(uint64_t *s)
{
	return (float)(tm_rand(s) >> 40) / (float)(1u << 24) * 2.0f - 1.0f;
}

size_t tv_nf(const struct tvar *v)
{
	return (size_t)v->spec.width * (1u + v->nslots);
}

static void tv_reserve(struct tvar *v, size_t n)
{
	if (n <= v->cap)
		return;
	v->cap = n * 2;
	v->lo = realloc(v->lo, v->cap * sizeof(*v->lo));
	v->hi = realloc(v->hi, v->cap * sizeof(*v->hi));
	v->data = realloc(v->data, v->cap * tv_nf(v) * sizeof(float));
	if (!v->lo || !v->hi || !v->data)
		abort();
}

long tv_find(const struct tvar *v, uint64_t lo, uint64_t hi)
{
	if (v->spec.kind == PS_VAR_DENSE || v->spec.kind == PS_VAR_SPARSE)
		return hi == 0 && lo < v->n ? (long)lo : -1;
	for (size_t i = 0; i < v->n; i++)
		if (v->lo[i] == lo && v->hi[i] == hi)
			return (long)i;
	return -1;
}

void tv_set(struct tvar *v, uint64_t lo, uint64_t hi, const float *row)
{
	long i = tv_find(v, lo, hi);

	if (i < 0) {
		tv_reserve(v, v->n + 1);
		i = (long)v->n++;
		v->lo[i] = lo;
		v->hi[i] = hi;
	}
	memcpy(v->data + (size_t)i * tv_nf(v), row, tv_nf(v) * sizeof(float));
}

bool tv_del(struct tvar *v, uint64_t lo, uint64_t hi)
{
	long i = tv_find(v, lo, hi);
	size_t last;

	if (i < 0)
		return false;
	last = v->n - 1;
	v->lo[i] = v->lo[last];
	v->hi[i] = v->hi[last];
	memmove(v->data + (size_t)i * tv_nf(v), v->data + last * tv_nf(v),
		tv_nf(v) * sizeof(float));
	v->n--;
	return true;
}

void tv_add_random_keys(struct tvar *v, size_t n, uint64_t *seed)
{
	float *row = malloc(tv_nf(v) * sizeof(float));

	for (size_t k = 0; k < n; k++) {
		uint64_t lo = tm_rand(seed),
			 hi = v->spec.kind == PS_VAR_HASH128 ? tm_rand(seed) : 0;

		for (size_t j = 0; j < tv_nf(v); j++)
			row[j] = tm_randf(seed);
		tv_set(v, lo, hi, row);
	}
	free(row);
}

struct tvar *tm_add_var(struct tmodel *m, const char *name, uint64_t id, enum ps_var_kind kind,
			uint64_t rows, uint32_t width, enum ps_optim_kind optim, uint64_t *seed)
{
	struct tvar *v = &m->vars[m->nvars++];
	float *row;

	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->id = id;
	v->spec.kind = kind;
	v->spec.rows = kind == PS_VAR_DENSE || kind == PS_VAR_SPARSE ? rows : 0;
	v->spec.width = width;
	v->spec.init.kind = PS_INIT_NORMAL;
	v->spec.init.stddev = 0.01f;
	v->spec.init.seed = id * 7;
	v->spec.optim = ps_optimizer_defaults(optim);
	v->nslots = optim == PS_OPTIM_SGD				      ? 0
		    : optim == PS_OPTIM_MOMENTUM || optim == PS_OPTIM_ADAGRAD ? 1
		    : optim == PS_OPTIM_CENTERED_RMSPROP		      ? 3
									      : 2;
	if (kind == PS_VAR_DENSE || kind == PS_VAR_SPARSE) {
		row = malloc(tv_nf(v) * sizeof(float));
		tv_reserve(v, rows);
		for (uint64_t r = 0; r < rows; r++) {
			for (size_t j = 0; j < tv_nf(v); j++)
				row[j] = tm_randf(seed);
			v->lo[r] = r;
			v->hi[r] = 0;
			memcpy(v->data + r * tv_nf(v), row, tv_nf(v) * sizeof(float));
		}
		v->n = rows;
		free(row);
	}
	return v;
}

void tm_free(struct tmodel *m)
{
	for (size_t i = 0; i < m->nvars; i++) {
		free(m->vars[i].lo);
		free(m->vars[i].hi);
		free(m->vars[i].data);
	}
	memset(m, 0, sizeof(*m));
}

static bool hashk(enum ps_var_kind k)
{
	return k == PS_VAR_HASH64 || k == PS_VAR_HASH128;
}

int tm_save(const struct tmodel *m, const char *root, const char *name, unsigned nparts)
{
	struct ps_ckpt_meta *meta = ps_ckpt_meta_create(name);
	char dir[4200], err[1024];
	int rc;

	rc = ps_ckpt_begin(root, name, dir, sizeof(dir), err, sizeof(err));
	if (rc)
		goto out;
	meta->cluster_version = 0x1234;
	meta->server_count = nparts;
	ps_ckpt_meta_set_placement(meta, "blob", 4);
	for (size_t i = 0; i < m->nvars && !rc; i++) {
		const struct tvar *v = &m->vars[i];
		struct ps_ckpt_var *cv =
			ps_ckpt_meta_add_var(meta, v->name, v->id, &v->spec, v->nslots);
		uint64_t dom = hashk(v->spec.kind) ? PS_HASH_BUCKETS : v->spec.rows;
		unsigned np = nparts > dom ? (unsigned)dom : nparts;

		for (unsigned p = 0; p < np && !rc; p++) {
			struct ps_ckpt_part_writer_opts o = {
				.dir = dir,
				.var_id = v->id,
				.kind = v->spec.kind,
				.width = v->spec.width,
				.nslots = v->nslots,
				.begin = dom * p / np,
				.end = dom * (p + 1) / np,
				.buffer_bytes = 100, /* small: exercise buffer boundaries */
			};
			struct ps_ckpt_part_writer *w;
			struct ps_ckpt_part_desc d;

			rc = ps_ckpt_part_writer_create(&o, &w, err, sizeof(err));
			for (size_t r = 0; r < v->n && !rc; r++) {
				uint64_t x = !hashk(v->spec.kind) ? v->lo[r]
					     : v->spec.kind == PS_VAR_HASH64
						     ? ps_hash_bucket64(v->lo[r])
						     : ps_hash_bucket128(v->lo[r], v->hi[r]);

				if (x >= o.begin && x < o.end)
					rc = ps_ckpt_part_writer_append(w, v->lo[r], v->hi[r],
									v->data + r * tv_nf(v));
			}
			if (!rc)
				rc = ps_ckpt_part_writer_finish(w, &d);
			if (!rc) {
				d.state.step = 100 + p;
				d.state.beta1_power = 0.5;
				d.state.beta2_power = 0.25 / (p + 1);
				rc = ps_ckpt_var_add_part(cv, &d);
			}
			ps_ckpt_part_writer_destroy(w);
		}
	}
	if (!rc)
		rc = ps_ckpt_commit(root, meta, err, sizeof(err));
	if (rc)
		fprintf(stderr, "tm_save %s: %s\n", name, err);
out:
	ps_ckpt_meta_free(meta);
	return rc;
}

int tm_load(const char *root, const char *name, struct tmodel *m)
{
	struct ps_ckpt_meta *meta;
	char err[1024], dir[4200], path[4400];
	int rc = ps_ckpt_meta_load(root, name, &meta, err, sizeof(err));

	if (rc) {
		fprintf(stderr, "tm_load %s: %s\n", name, err);
		return rc;
	}
	ps_ckpt_dir(root, meta->name, dir, sizeof(dir));
	for (size_t i = 0; i < meta->nvars && !rc; i++) {
		const struct ps_ckpt_var *cv = &meta->vars[i];
		struct tvar *v = &m->vars[m->nvars++];

		memset(v, 0, sizeof(*v));
		snprintf(v->name, sizeof(v->name), "%s", cv->name);
		v->id = cv->id;
		v->spec = cv->spec;
		v->nslots = cv->nslots;
		for (size_t p = 0; p < cv->nparts && !rc; p++) {
			struct ps_ckpt_part_reader_opts o = {.path = path, .buffer_bytes = 77};
			struct ps_ckpt_part_reader *r;
			struct ps_ckpt_row row;

			snprintf(path, sizeof(path), "%s/%s", dir, cv->parts[p].file);
			rc = ps_ckpt_part_reader_open(&o, &r, err, sizeof(err));
			while (!rc && (rc = ps_ckpt_part_reader_next(r, &row)) == 1) {
				tv_reserve(v, v->n + 1);
				v->lo[v->n] = row.id;
				v->hi[v->n] = row.key_hi;
				memcpy(v->data + v->n * tv_nf(v), row.data,
				       tv_nf(v) * sizeof(float));
				v->n++;
				rc = 0;
			}
			if (rc)
				fprintf(stderr, "tm_load: %s\n",
					r ? ps_ckpt_part_reader_errmsg(r) : err);
			ps_ckpt_part_reader_close(r);
		}
	}
	ps_ckpt_meta_free(meta);
	return rc;
}

static const struct tvar *find_var(const struct tmodel *m, uint64_t id)
{
	for (size_t i = 0; i < m->nvars; i++)
		if (m->vars[i].id == id)
			return &m->vars[i];
	return NULL;
}

bool tm_equal(const struct tmodel *a, const struct tmodel *b)
{
	if (a->nvars != b->nvars)
		return false;
	for (size_t i = 0; i < a->nvars; i++) {
		const struct tvar *x = &a->vars[i], *y = find_var(b, x->id);

		if (!y || x->n != y->n || x->nslots != y->nslots ||
		    x->spec.width != y->spec.width || x->spec.kind != y->spec.kind ||
		    strcmp(x->name, y->name)) {
			fprintf(stderr, "tm_equal: variable %s differs (rows %zu)\n", x->name,
				x->n);
			return false;
		}
		for (size_t r = 0; r < x->n; r++) {
			long j = tv_find(y, x->lo[r], x->hi[r]);

			if (j < 0 || memcmp(x->data + r * tv_nf(x), y->data + (size_t)j * tv_nf(y),
					    tv_nf(x) * sizeof(float))) {
				fprintf(stderr, "tm_equal: %s row %llu:%llu %s\n", x->name,
					(unsigned long long)x->lo[r], (unsigned long long)x->hi[r],
					j < 0 ? "missing" : "differs");
				return false;
			}
		}
	}
	return true;
}

void tm_tmpdir(char *buf, size_t len, const char *tag)
{
	const char *t = getenv("TMPDIR");

	snprintf(buf, len, "%s/psplus-%s-XXXXXX", t && *t ? t : "/tmp", tag);
	if (!mkdtemp(buf))
		abort();
}

void tm_rmrf(const char *path)
{
	char cmd[4600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "rm -rf %s failed\n", path);
}

size_t tm_copy_file(const char *src, const char *dst, size_t len)
{
	FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
	size_t total = 0, n;
	char buf[4096];

	if (!in || !out)
		abort();
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
		size_t k = n;

		if (total + k > len)
			k = total < len ? len - total : 0;
		if (k)
			fwrite(buf, 1, k, out);
		total += n;
	}
	fclose(in);
	fclose(out);
	return total;
}

void tm_flip_byte(const char *path, size_t off, uint8_t mask)
{
	int fd = open(path, O_RDWR);
	uint8_t b;

	if (fd < 0 || pread(fd, &b, 1, (off_t)off) != 1)
		abort();
	b ^= mask;
	if (pwrite(fd, &b, 1, (off_t)off) != 1)
		abort();
	close(fd);
}

size_t tm_file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (size_t)st.st_size;
}
