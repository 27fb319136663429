/*
 * Checkpoint and streaming-model tests against a running cluster (driven by the
 * test_ckpt_*.sh scripts). Every model here is deterministic: the gradient of row r of
 * variable v at step t is a function of (v, r, t), and every step pushes every row, so two
 * runs that apply the same steps hold the same rows, bit for bit.
 *
 *   ckpt_driver KV train FROM TO [SAVE_NAME [DUMP_AT_SAVE]]
 *       declare the model (dense/Adam, sparse/FTRL, hash64/Adagrad, hash128/Adam: slots and
 *       Adam's powers), push steps FROM..TO-1; with SAVE_NAME, save after them (and dump the
 *       model to DUMP_AT_SAVE). Adam's powers advance once per request a shard applies, and
 *       the client cuts a call into requests per shard, so an Adam variable continues
 *       identically on another layout only when every shard takes each step in one request:
 *       the Adam variables are small; the big, many-part sparse one uses FTRL (slots only).
 *   ckpt_driver KV dump FILE              declare, pull every row, write FILE
 *   ckpt_driver KV compare FILE TOL       declare, pull every row, compare with FILE
 *   ckpt_driver KV restore NAME [EXPECT]  ps_client_restore(NAME); EXPECT: an error code name
 *                                         and a text the message must contain ("ok" = 0)
 *   ckpt_driver KV save NAME [EXPECT]     ps_client_save(NAME), as restore
 *   ckpt_driver KV pit_worker W NW STOP   point-in-time: worker W of NW (bounded staleness)
 *                                         adds 1 to every row of the counters each step,
 *                                         until the file STOP exists
 *   ckpt_driver KV pit_saver N PREFIX     N saves PREFIX1.. while the workers run; also checks
 *                                         that concurrent requests get PS_EOP_IN_PROGRESS
 *   ckpt_driver ROOT pit_check NAME...    every row of every counter in each checkpoint holds
 *                                         one same value
 *   ckpt_driver KV stream ROUNDS          streaming: train, save "base", then ROUNDS of pushes,
 *                                         new and deleted hash keys, and exports
 *   ckpt_driver KV stream_check ROOT NAME the checkpoint NAME (base + deltas) equals the live
 *                                         model, key set included
 *   ckpt_driver KV bench_declare N ROWS WIDTH  N sparse variables big0.. of ROWS x WIDTH
 *                                         (constant initializer, SGD): rows for
 *                                         scripts/bench-ckpt.sh, nothing pushed
 *
 * Prints PASS/FAIL lines; exits 0 when everything passed.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <psplus/client.h>
#include <psplus/error.h>

#include "model_io/ckpt.h"
#include "tests/integration/itest.h"

static const char *kv;

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---- the model of train / dump / compare ----------------------------------------------------- */

#define NVARS	    4
#define DENSE_ROWS  300
#define SPARSE_ROWS 40000
#define HASH_KEYS   6000
#define WIDTH	    4

struct var {
	const char *name;
	struct ps_var_spec spec;
	uint32_t id;
	size_t rows; /* rows the model uses (hash: keys) */
};

static struct var vars[NVARS];

static void model_specs(void)
{
	struct ps_optimizer adam = ps_optimizer_defaults(PS_OPTIM_ADAM);
	struct ps_optimizer adagrad = ps_optimizer_defaults(PS_OPTIM_ADAGRAD);
	struct ps_optimizer ftrl = ps_optimizer_defaults(PS_OPTIM_FTRL);

	adam.adam.learning_rate = 0.01f;
	adagrad.adagrad.learning_rate = 0.05f;
	ftrl.ftrl.learning_rate = 0.05f;
	ftrl.ftrl.l1 = 0.001f;
	vars[0] = (struct var){
		"dense",
		{.kind = PS_VAR_DENSE,
		 .rows = DENSE_ROWS,
		 .width = WIDTH,
		 .init = {.kind = PS_INIT_UNIFORM, .min = -0.1f, .max = 0.1f, .seed = 1},
		 .optim = adam},
		0,
		DENSE_ROWS};
	vars[1] = (struct var){"sparse",
			       {.kind = PS_VAR_SPARSE,
				.rows = SPARSE_ROWS,
				.width = WIDTH,
				.init = {.kind = PS_INIT_NORMAL, .stddev = 0.05f, .seed = 2},
				.optim = ftrl},
			       0,
			       SPARSE_ROWS};
	vars[2] = (struct var){"hash64",
			       {.kind = PS_VAR_HASH64,
				.width = WIDTH,
				.init = {.kind = PS_INIT_NORMAL, .stddev = 0.05f, .seed = 3},
				.optim = adagrad},
			       0,
			       HASH_KEYS};
	vars[3] = (struct var){"hash128",
			       {.kind = PS_VAR_HASH128,
				.width = WIDTH,
				.init = {.kind = PS_INIT_CONSTANT, .value = 0.25f, .seed = 4},
				.optim = adam},
			       0,
			       HASH_KEYS};
}

static void declare_all(struct ps_client *c)
{
	struct ps_var_load load = {.expected_keys = HASH_KEYS};

	model_specs();
	for (int v = 0; v < NVARS; v++) {
		int rc = ps_client_declare_load(c, vars[v].name, &vars[v].spec, &load, &vars[v].id);

		itest_must(rc, vars[v].name);
	}
}

static uint64_t *key64;		 /* [HASH_KEYS] */
static struct ps_key128 *key128; /* [HASH_KEYS] */
static uint64_t *ids;		 /* [SPARSE_ROWS]: 0, 1, ... */

static void keys_init(void)
{
	key64 = malloc(HASH_KEYS * sizeof(*key64));
	key128 = malloc(HASH_KEYS * sizeof(*key128));
	ids = malloc(SPARSE_ROWS * sizeof(*ids));
	if (!key64 || !key128 || !ids)
		exit(2);
	for (uint64_t i = 0; i < HASH_KEYS; i++) {
		key64[i] = mix(i);
		key128[i] = (struct ps_key128){.lo = mix(i + 1000000), .hi = mix(i + 2000000)};
	}
	for (uint64_t i = 0; i < SPARSE_ROWS; i++)
		ids[i] = i;
}

static float grad_of(int v, uint64_t row, uint64_t step, uint32_t col)
{
	return 0.5f * (float)sin(0.013 * (double)row + 0.37 * (double)step + 1.1 * v + 0.5 * col);
}

static void step_push(struct ps_client *c, uint64_t step, float *buf)
{
	for (int v = 0; v < NVARS; v++) {
		size_t n = vars[v].rows;
		int rc;

		for (size_t r = 0; r < n; r++)
			for (uint32_t k = 0; k < WIDTH; k++)
				buf[r * WIDTH + k] = grad_of(v, r, step, k);
		switch (vars[v].spec.kind) {
		case PS_VAR_DENSE:
			rc = ps_client_dense_push(c, vars[v].id, buf, n * WIDTH);
			break;
		case PS_VAR_SPARSE:
			rc = ps_client_sparse_push(c, vars[v].id, ids, n, buf);
			break;
		case PS_VAR_HASH64:
			rc = ps_client_hash_push(c, vars[v].id, key64, n, buf);
			break;
		default:
			rc = ps_client_hash128_push(c, vars[v].id, key128, n, buf);
			break;
		}
		itest_must(rc, vars[v].name);
	}
}

/* Every row of every variable, in model order. */
static float *pull_all(struct ps_client *c, size_t *nfloats)
{
	size_t total = 0, off = 0;
	float *out;

	for (int v = 0; v < NVARS; v++)
		total += vars[v].rows * WIDTH;
	out = malloc(total * sizeof(float));
	if (!out)
		exit(2);
	for (int v = 0; v < NVARS; v++) {
		size_t n = vars[v].rows;
		int rc;

		switch (vars[v].spec.kind) {
		case PS_VAR_DENSE:
			rc = ps_client_dense_pull(c, vars[v].id, out + off, n * WIDTH);
			break;
		case PS_VAR_SPARSE:
			rc = ps_client_sparse_pull(c, vars[v].id, ids, n, out + off);
			break;
		case PS_VAR_HASH64:
			rc = ps_client_hash_pull(c, vars[v].id, key64, n, out + off);
			break;
		default:
			rc = ps_client_hash128_pull(c, vars[v].id, key128, n, out + off);
			break;
		}
		itest_must(rc, vars[v].name);
		off += n * WIDTH;
	}
	*nfloats = total;
	return out;
}

static void dump_to(struct ps_client *c, const char *path)
{
	size_t n;
	float *m = pull_all(c, &n);
	FILE *f = fopen(path, "wb");

	if (!f || fwrite(m, sizeof(float), n, f) != n || fclose(f)) {
		printf("FAIL: cannot write %s\n", path);
		exit(1);
	}
	free(m);
}

static int cmd_train(int argc, char **argv)
{
	uint64_t from, to;
	struct ps_client *c;
	float *buf;

	if (argc < 2)
		return 2;
	from = strtoull(argv[0], NULL, 10);
	to = strtoull(argv[1], NULL, 10);
	c = itest_client(0, 1, PS_SYNC_ASYNC, 0);
	declare_all(c);
	buf = malloc((size_t)SPARSE_ROWS * WIDTH * sizeof(float));
	if (!buf)
		return 2;
	for (uint64_t t = from; t < to; t++)
		step_push(c, t, buf);
	if (argc >= 3) {
		struct ps_model_op_info info;

		itest_must(ps_client_save_info(c, argv[2], 0, &info), "save");
		itest_check(!strcmp(info.name, argv[2]) && info.rows > 0,
			    "save '%s' after step %" PRIu64 ": %" PRIu64 " rows, %" PRIu64
			    " bytes, pushes held %.1f ms",
			    info.name, to - 1, info.rows, info.bytes, info.pause_us / 1e3);
		if (argc >= 4)
			dump_to(c, argv[3]);
	}
	free(buf);
	ps_client_destroy(c);
	return itest_status();
}

static int cmd_dump(int argc, char **argv)
{
	struct ps_client *c;

	if (argc < 1)
		return 2;
	c = itest_client(0, 1, PS_SYNC_ASYNC, 0);
	declare_all(c);
	dump_to(c, argv[0]);
	ps_client_destroy(c);
	return 0;
}

static int cmd_compare(int argc, char **argv)
{
	struct ps_client *c;
	size_t n, got, bad = 0, off = 0;
	double tol, worst = 0;
	float *live, *want;
	FILE *f;

	if (argc < 2)
		return 2;
	tol = strtod(argv[1], NULL);
	c = itest_client(0, 1, PS_SYNC_ASYNC, 0);
	declare_all(c);
	live = pull_all(c, &n);
	want = malloc(n * sizeof(float));
	f = fopen(argv[0], "rb");
	got = f && want ? fread(want, sizeof(float), n, f) : 0;
	if (f)
		fclose(f);
	itest_check(got == n, "%s holds the whole model (%zu of %zu floats)", argv[0], got, n);
	for (int v = 0; v < NVARS && got == n; v++) {
		size_t vb = 0;
		double vw = 0;

		for (size_t i = 0; i < vars[v].rows * WIDTH; i++) {
			double d = fabs((double)live[off + i] - (double)want[off + i]);

			if (!(d <= tol)) {
				if (!vb)
					printf("  %s row %zu col %zu: live %.9g, expected %.9g\n",
					       vars[v].name, i / WIDTH, i % WIDTH, live[off + i],
					       want[off + i]);
				vb++;
			}
			if (d > vw)
				vw = d;
		}
		itest_check(!vb, "%s: %zu rows match %s within %g (largest difference %.3g)",
			    vars[v].name, vars[v].rows, argv[0], tol, vw);
		bad += vb;
		if (vw > worst)
			worst = vw;
		off += vars[v].rows * WIDTH;
	}
	free(live);
	free(want);
	ps_client_destroy(c);
	return itest_status();
}

/* EXPECT: "ok", or "CODE_NAME[:text]" - the call must fail with that code and message. */
static void expect(int rc, const char *what, const char *exp)
{
	const char *colon = exp ? strchr(exp, ':') : NULL;
	char code[64];

	if (!exp || !strcmp(exp, "ok")) {
		itest_check(!rc, "%s: %s", what, rc ? ps_err_name(rc) : "ok");
		return;
	}
	snprintf(code, sizeof(code), "%.*s", colon ? (int)(colon - exp) : (int)strlen(exp), exp);
	itest_check(rc && !strcmp(ps_err_name(rc), code) &&
			    (!colon || strstr(ps_client_last_error(), colon + 1)),
		    "%s fails with %s%s%s (got %s: %s)", what, code,
		    colon ? ", message naming " : "", colon ? colon + 1 : "", ps_err_name(rc),
		    ps_client_last_error());
}

static int cmd_model_op(bool save, int argc, char **argv)
{
	struct ps_model_op_info info;
	struct ps_client *c;
	char what[300];
	int rc;

	if (argc < 1)
		return 2;
	c = itest_client(0, 1, PS_SYNC_ASYNC, 0);
	rc = save ? ps_client_save_info(c, argv[0], 0, &info)
		  : ps_client_restore_info(c, argv[0], 0, &info);
	snprintf(what, sizeof(what), "%s %s", save ? "save" : "restore", argv[0]);
	expect(rc, what, argc > 1 ? argv[1] : NULL);
	if (!rc)
		printf("  %s '%s': %" PRIu64 " rows, %" PRIu64 " bytes in %.3f s\n",
		       save ? "saved" : "restored", info.name, info.rows, info.bytes,
		       info.elapsed_us / 1e6);
	ps_client_destroy(c);
	return itest_status();
}

/* ---- point in time ---------------------------------------------------------------------------- */

#define PIT_SPARSE 20000
#define PIT_HASH   3000
#define PIT_DENSE  500

static uint32_t pit_ids[3];

static void pit_declare(struct ps_client *c)
{
	struct ps_optimizer sgd = ps_optimizer_defaults(PS_OPTIM_SGD);
	struct ps_var_spec cs = {.kind = PS_VAR_SPARSE, .rows = PIT_SPARSE, .width = 2};
	struct ps_var_spec ch = {.kind = PS_VAR_HASH64, .width = 2};
	struct ps_var_spec cd = {.kind = PS_VAR_DENSE, .rows = PIT_DENSE, .width = 2};

	/* SGD with rate 1 and gradient -1: each push adds exactly 1 to the row. */
	sgd.sgd.learning_rate = 1.0f;
	cs.optim = ch.optim = cd.optim = sgd;
	itest_must(ps_client_declare(c, "count_sparse", &cs, &pit_ids[0]), "declare count_sparse");
	itest_must(ps_client_declare(c, "count_hash", &ch, &pit_ids[1]), "declare count_hash");
	itest_must(ps_client_declare(c, "count_dense", &cd, &pit_ids[2]), "declare count_dense");
}

static int cmd_pit_worker(int argc, char **argv)
{
	uint32_t w, nw;
	uint64_t steps = 0, *keys, *sids;
	struct ps_client *c;
	float *minus;

	if (argc < 3)
		return 2;
	w = (uint32_t)strtoul(argv[0], NULL, 10);
	nw = (uint32_t)strtoul(argv[1], NULL, 10);
	/* Bounded staleness: steps go through the scheduler, so a save can wait for a step
	 * boundary; a slack this large never makes a worker wait for the other. */
	c = itest_client(w, nw, PS_SYNC_BOUNDED, 1000000);
	pit_declare(c);
	keys = malloc(PIT_HASH * sizeof(*keys));
	sids = malloc(PIT_SPARSE * sizeof(*sids));
	minus = malloc(PIT_SPARSE * 2 * sizeof(float));
	if (!keys || !sids || !minus)
		return 2;
	for (uint64_t i = 0; i < PIT_HASH; i++)
		keys[i] = mix(i + 77);
	for (uint64_t i = 0; i < PIT_SPARSE; i++)
		sids[i] = i;
	for (size_t i = 0; i < PIT_SPARSE * 2; i++)
		minus[i] = -1.0f;
	for (; access(argv[2], F_OK) && steps < 1000000; steps++) {
		itest_must(ps_client_sparse_push(c, pit_ids[0], sids, PIT_SPARSE, minus),
			   "push sparse");
		itest_must(ps_client_hash_push(c, pit_ids[1], keys, PIT_HASH, minus), "push hash");
		itest_must(ps_client_dense_push(c, pit_ids[2], minus, PIT_DENSE * 2), "push dense");
		itest_must(ps_client_step_end(c, steps), "step_end");
	}
	printf("PASS: worker %u of %u pushed %" PRIu64 " steps\n", w, nw, steps);
	free(keys);
	free(sids);
	free(minus);
	ps_client_destroy(c);
	return 0;
}

struct racer {
	const char *name;
	int rc;
	char err[512];
};

static void *race_save(void *arg)
{
	struct racer *r = arg;
	struct ps_client_opts o = ps_client_opts_default();
	struct ps_client *c = NULL;

	o.kv_path = kv;
	o.timeout_ms = 60000;
	r->rc = ps_client_create(&o, &c);
	if (!r->rc)
		r->rc = ps_client_save(c, r->name, 0);
	snprintf(r->err, sizeof(r->err), "%s", ps_client_last_error());
	ps_client_destroy(c);
	return NULL;
}

static int cmd_pit_saver(int argc, char **argv)
{
	struct ps_client *c;
	char name[64];
	int n, busy = 0, ok = 0;

	if (argc < 2)
		return 2;
	n = atoi(argv[0]);
	c = itest_client(0, 1, PS_SYNC_ASYNC, 0);
	for (int i = 1; i <= n; i++) {
		struct ps_model_op_info info;
		int rc;

		usleep(150000);
		snprintf(name, sizeof(name), "%s%d", argv[1], i);
		rc = ps_client_save_info(c, name, 0, &info);
		itest_check(!rc,
			    "save %s while the workers push: %" PRIu64 " rows, pushes held %.1f ms",
			    name, info.rows, info.pause_us / 1e3);
	}
	/* Two saves at once (two clients, two threads): one runs, the other is refused at once
	 * unless it came after the first finished. Tried until a refusal is seen. */
	for (int round = 0; round < 20 && !busy; round++) {
		struct racer r[3];
		pthread_t t[3];

		for (int k = 0; k < 3; k++) {
			snprintf(r[k].err, sizeof(r[k].err), "race%d_%d", round, k);
			r[k].name = strdup(r[k].err);
			pthread_create(&t[k], NULL, race_save, &r[k]);
		}
		for (int k = 0; k < 3; k++) {
			pthread_join(t[k], NULL);
			busy += r[k].rc == PS_EOP_IN_PROGRESS;
			ok += r[k].rc == 0;
			if (r[k].rc && r[k].rc != PS_EOP_IN_PROGRESS)
				printf("  race save: %s: %s\n", ps_err_name(r[k].rc), r[k].err);
			free((void *)r[k].name);
		}
	}
	itest_check(busy > 0 && ok > 0,
		    "concurrent save requests: %d refused at once with PS_EOP_IN_PROGRESS, %d done",
		    busy, ok);
	ps_client_destroy(c);
	return itest_status();
}

/* Every row of every variable of checkpoint @name under @root. */
static int pit_check_one(const char *root, const char *name, double *value)
{
	struct ps_ckpt_meta *m = NULL;
	char err[1024], dir[4200], path[4400];
	double first = NAN;
	uint64_t rows = 0, bad = 0;
	int rc;

	rc = ps_ckpt_meta_load(root, name, &m, err, sizeof(err));
	if (rc) {
		itest_check(false, "load %s: %s", name, err);
		return rc;
	}
	ps_ckpt_dir(root, m->name, dir, sizeof(dir));
	for (size_t v = 0; v < m->nvars; v++) {
		const struct ps_ckpt_var *cv = &m->vars[v];

		for (size_t p = 0; p < cv->nparts; p++) {
			struct ps_ckpt_part_reader_opts o = {.path = path};
			struct ps_ckpt_part_reader *r;
			struct ps_ckpt_row row;

			snprintf(path, sizeof(path), "%s/%s", dir, cv->parts[p].file);
			rc = ps_ckpt_part_reader_open(&o, &r, err, sizeof(err));
			if (rc) {
				itest_check(false, "%s", err);
				ps_ckpt_meta_free(m);
				return rc;
			}
			while ((rc = ps_ckpt_part_reader_next(r, &row)) == 1) {
				for (uint32_t k = 0; k < row.width; k++) {
					if (isnan(first))
						first = row.data[k];
					if (row.data[k] != first) {
						if (!bad)
							printf("  %s: %s row %" PRIu64 " holds %g, "
							       "others %g\n",
							       name, cv->name, row.id, row.data[k],
							       first);
						bad++;
					}
				}
				rows++;
			}
			if (rc)
				itest_check(false, "%s", ps_ckpt_part_reader_errmsg(r));
			ps_ckpt_part_reader_close(r);
		}
	}
	itest_check(!bad && rows == PIT_SPARSE + PIT_HASH + PIT_DENSE && first == floor(first),
		    "checkpoint %s: all %" PRIu64
		    " rows of %zu counters hold the same step count %g",
		    name, rows, m->nvars, first);
	*value = first;
	ps_ckpt_meta_free(m);
	return 0;
}

static int cmd_pit_check(int argc, char **argv)
{
	double v, last = -1;
	bool grew = false;

	for (int i = 0; i < argc; i++) {
		if (pit_check_one(kv, argv[i], &v))
			continue;
		grew |= last >= 0 && v > last;
		last = v;
	}
	itest_check(grew, "the checkpoints were taken while the counts grew");
	return itest_status();
}

/* ---- streaming ------------------------------------------------------------------------------- */

#define ST_DENSE  64
#define ST_SPARSE 5000
#define ST_KEYS	  4000 /* key universe of each hash variable */

static uint32_t st_ids[4];

static void st_declare(struct ps_client *c)
{
	struct ps_optimizer ada = ps_optimizer_defaults(PS_OPTIM_ADAGRAD);
	struct ps_var_spec d = {.kind = PS_VAR_DENSE, .rows = ST_DENSE, .width = 3, .optim = ada};
	struct ps_var_spec s = {.kind = PS_VAR_SPARSE, .rows = ST_SPARSE, .width = 3, .optim = ada};
	struct ps_var_spec h = {.kind = PS_VAR_HASH64, .width = 3, .optim = ada};
	struct ps_var_spec h2 = {.kind = PS_VAR_HASH128, .width = 3, .optim = ada};

	ada.adagrad.learning_rate = 0.1f;
	d.optim = s.optim = h.optim = h2.optim = ada;
	d.init = (struct ps_initializer){.kind = PS_INIT_UNIFORM, .min = -1, .max = 1, .seed = 5};
	s.init = h.init = h2.init = d.init;
	itest_must(ps_client_declare(c, "st_dense", &d, &st_ids[0]), "declare st_dense");
	itest_must(ps_client_declare(c, "st_sparse", &s, &st_ids[1]), "declare st_sparse");
	itest_must(ps_client_declare(c, "st_hash64", &h, &st_ids[2]), "declare st_hash64");
	itest_must(ps_client_declare(c, "st_hash128", &h2, &st_ids[3]), "declare st_hash128");
}

static struct ps_key128 st_k128(uint64_t i)
{
	return (struct ps_key128){.lo = mix(i + 5000), .hi = i & 1 ? mix(i) : 0};
}

/*
 * Round r >= 0 of the schedule: which keys of the universe are pushed and which deleted. The
 * base (round -1) pushes keys [0, 1000); round r pushes [500 r, 500 r + 1500) and deletes the
 * keys k < 500 r + 1000 with k % 7 == r % 7. The final state follows from replaying it.
 */
static bool st_pushed(int r, uint64_t k)
{
	if (r < 0)
		return k < 1000;
	return k >= 500u * r && k < 500u * r + 1500;
}

static bool st_deleted(int r, uint64_t k)
{
	return r >= 0 && k < 500u * r + 1000 && k % 7 == (uint64_t)r % 7;
}

static void st_round(struct ps_client *c, int r)
{
	uint64_t k64[ST_KEYS], sid[ST_SPARSE], del[ST_KEYS];
	struct ps_key128 k128[ST_KEYS], del128[ST_KEYS];
	static float g[ST_SPARSE * 3];
	size_t n = 0, nd = 0, ns = 0;

	for (size_t i = 0; i < ST_SPARSE * 3; i++)
		g[i] = (float)sin(0.7 * i + r);
	itest_must(ps_client_dense_push(c, st_ids[0], g, ST_DENSE * 3), "push st_dense");
	for (uint64_t i = (uint64_t)(r + 1) % 3; i < ST_SPARSE; i += 3)
		sid[ns++] = i;
	itest_must(ps_client_sparse_push(c, st_ids[1], sid, ns, g), "push st_sparse");
	for (uint64_t k = 0; k < ST_KEYS; k++) {
		if (st_deleted(r, k)) {
			del[nd] = mix(k + 9000);
			del128[nd++] = st_k128(k);
		}
	}
	if (nd) {
		itest_must(ps_client_hash_delete(c, st_ids[2], del, nd), "delete st_hash64");
		itest_must(ps_client_hash128_delete(c, st_ids[3], del128, nd), "delete st_hash128");
	}
	for (uint64_t k = 0; k < ST_KEYS; k++) {
		if (st_pushed(r, k)) {
			k64[n] = mix(k + 9000);
			k128[n++] = st_k128(k);
		}
	}
	itest_must(ps_client_hash_push(c, st_ids[2], k64, n, g), "push st_hash64");
	itest_must(ps_client_hash128_push(c, st_ids[3], k128, n, g), "push st_hash128");
}

static int cmd_stream(int argc, char **argv)
{
	struct ps_model_op_info info;
	struct ps_client *c;
	int rounds;

	if (argc < 1)
		return 2;
	rounds = atoi(argv[0]);
	c = itest_client(0, 1, PS_SYNC_ASYNC, 0);
	st_declare(c);
	st_round(c, -1);
	itest_must(ps_client_save(c, "base", 0), "save base");
	for (int r = 0; r < rounds; r++) {
		st_round(c, r);
		itest_must(ps_client_export_streaming_info(c, 0, &info), "export");
		itest_check(info.rows > 0, "export %d: %" PRIu64 " rows, %" PRIu64 " deletions",
			    r + 1, info.rows, info.bytes);
	}
	ps_client_destroy(c);
	return itest_status();
}

/* The rows of variable @name of checkpoint @m: keys (lo, hi) and values, in file order. */
struct ck_rows {
	uint64_t *lo, *hi;
	float *val;
	size_t n, cap;
};

static void ck_load(const char *root, const struct ps_ckpt_meta *m, const char *name,
		    struct ck_rows *out)
{
	const struct ps_ckpt_var *cv = ps_ckpt_meta_find_var_name(m, name);
	char dir[4200], path[4400], err[1024];

	memset(out, 0, sizeof(*out));
	if (!cv) {
		itest_check(false, "checkpoint %s has variable %s", m->name, name);
		return;
	}
	ps_ckpt_dir(root, m->name, dir, sizeof(dir));
	for (size_t p = 0; p < cv->nparts; p++) {
		struct ps_ckpt_part_reader_opts o = {.path = path};
		struct ps_ckpt_part_reader *r;
		struct ps_ckpt_row row;
		int rc;

		snprintf(path, sizeof(path), "%s/%s", dir, cv->parts[p].file);
		if (ps_ckpt_part_reader_open(&o, &r, err, sizeof(err))) {
			itest_check(false, "%s", err);
			return;
		}
		while ((rc = ps_ckpt_part_reader_next(r, &row)) == 1) {
			if (out->n == out->cap) {
				out->cap = out->cap ? out->cap * 2 : 1024;
				out->lo = realloc(out->lo, out->cap * 8);
				out->hi = realloc(out->hi, out->cap * 8);
				out->val = realloc(out->val, out->cap * 3 * sizeof(float));
			}
			out->lo[out->n] = row.id;
			out->hi[out->n] = row.key_hi;
			memcpy(out->val + out->n * 3, row.data, 3 * sizeof(float));
			out->n++;
		}
		if (rc)
			itest_check(false, "%s", ps_ckpt_part_reader_errmsg(r));
		ps_ckpt_part_reader_close(r);
	}
}

static long ck_find(const struct ck_rows *r, uint64_t lo, uint64_t hi)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->lo[i] == lo && r->hi[i] == hi)
			return (long)i;
	return -1;
}

static int cmd_stream_check(int argc, char **argv)
{
	static float live[ST_SPARSE * 3];
	struct ps_ckpt_meta *m = NULL;
	struct ck_rows rows;
	struct ps_client *c;
	char err[1024];
	int rounds;

	if (argc < 3)
		return 2;
	rounds = atoi(argv[2]);
	if (ps_ckpt_meta_load(argv[0], argv[1], &m, err, sizeof(err))) {
		itest_check(false, "%s", err);
		return 1;
	}
	c = itest_client(0, 1, PS_SYNC_ASYNC, 0);
	st_declare(c);
	/* dense and sparse: row ids in order in the parts */
	for (int v = 0; v < 2; v++) {
		const char *name = v ? "st_sparse" : "st_dense";
		size_t nrows = v ? ST_SPARSE : ST_DENSE, bad = 0;

		if (v) {
			uint64_t *all = malloc(ST_SPARSE * sizeof(*all));

			for (uint64_t i = 0; i < ST_SPARSE; i++)
				all[i] = i;
			itest_must(ps_client_sparse_pull(c, st_ids[1], all, ST_SPARSE, live),
				   "pull");
			free(all);
		} else {
			itest_must(ps_client_dense_pull(c, st_ids[0], live, ST_DENSE * 3), "pull");
		}
		ck_load(argv[0], m, name, &rows);
		for (size_t i = 0; i < rows.n; i++)
			bad += memcmp(rows.val + i * 3, live + rows.lo[i] * 3, 12) != 0;
		itest_check(rows.n == nrows && !bad,
			    "%s: base + deltas = live model (%zu rows, %zu differ)", name, rows.n,
			    bad);
		free(rows.lo);
		free(rows.hi);
		free(rows.val);
	}
	/* hash: the live key set from the schedule, then every live key's row */
	for (int v = 0; v < 2; v++) {
		const char *name = v ? "st_hash128" : "st_hash64";
		size_t nlive = 0, absent = 0, bad = 0, ghosts = 0;

		ck_load(argv[0], m, name, &rows);
		for (uint64_t k = 0; k < ST_KEYS; k++) {
			bool present = st_pushed(-1, k);
			struct ps_key128 k2 = st_k128(k);
			uint64_t k1 = mix(k + 9000);
			float row[3];
			long at;

			for (int r = 0; r < rounds; r++) {
				if (st_deleted(r, k))
					present = false;
				if (st_pushed(r, k))
					present = true;
			}
			at = v ? ck_find(&rows, k2.lo, k2.hi) : ck_find(&rows, k1, 0);
			if (!present) {
				/* Pulling it would create it: only the checkpoint is looked at. */
				ghosts += at >= 0;
				continue;
			}
			nlive++;
			if (at < 0) {
				absent++;
				continue;
			}
			if (v)
				itest_must(ps_client_hash128_pull(c, st_ids[3], &k2, 1, row),
					   "pull");
			else
				itest_must(ps_client_hash_pull(c, st_ids[2], &k1, 1, row), "pull");
			bad += memcmp(row, rows.val + at * 3, 12) != 0;
		}
		itest_check(
			!absent && !bad && !ghosts && rows.n == nlive,
			"%s: base + deltas = live model: %zu live keys, %zu in the checkpoint, %zu "
			"missing, %zu differ, %zu deleted keys still there",
			name, nlive, rows.n, absent, bad, ghosts);
		free(rows.lo);
		free(rows.hi);
		free(rows.val);
	}
	ps_ckpt_meta_free(m);
	ps_client_destroy(c);
	return itest_status();
}

static int cmd_bench_declare(int argc, char **argv)
{
	struct ps_var_spec s = {.kind = PS_VAR_SPARSE};
	struct ps_client *c;
	char name[32];
	uint32_t id;
	int n;

	if (argc < 3)
		return 2;
	n = atoi(argv[0]);
	s.rows = strtoull(argv[1], NULL, 10);
	s.width = (uint32_t)strtoul(argv[2], NULL, 10);
	s.init = (struct ps_initializer){.kind = PS_INIT_CONSTANT, .value = 0.5f};
	s.optim = ps_optimizer_defaults(PS_OPTIM_SGD);
	c = itest_client(0, 1, PS_SYNC_ASYNC, 0);
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "big%d", i);
		itest_must(ps_client_declare(c, name, &s, &id), name);
	}
	printf("PASS: %d variables of %" PRIu64 " x %u floats declared\n", n, s.rows, s.width);
	ps_client_destroy(c);
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 3) {
		fprintf(stderr, "usage: ckpt_driver KV|ROOT COMMAND ARGS (see the source)\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	kv = argv[1];
	itest_client_setup(kv, getenv("PS_CKPT_TRANSPORT") ? getenv("PS_CKPT_TRANSPORT") : "auto",
			   60000);
	cmd = argv[2];
	keys_init();
	if (!strcmp(cmd, "train"))
		return cmd_train(argc - 3, argv + 3);
	if (!strcmp(cmd, "dump"))
		return cmd_dump(argc - 3, argv + 3);
	if (!strcmp(cmd, "compare"))
		return cmd_compare(argc - 3, argv + 3);
	if (!strcmp(cmd, "save"))
		return cmd_model_op(true, argc - 3, argv + 3);
	if (!strcmp(cmd, "restore"))
		return cmd_model_op(false, argc - 3, argv + 3);
	if (!strcmp(cmd, "pit_worker"))
		return cmd_pit_worker(argc - 3, argv + 3);
	if (!strcmp(cmd, "pit_saver"))
		return cmd_pit_saver(argc - 3, argv + 3);
	if (!strcmp(cmd, "pit_check"))
		return cmd_pit_check(argc - 3, argv + 3);
	if (!strcmp(cmd, "stream"))
		return cmd_stream(argc - 3, argv + 3);
	if (!strcmp(cmd, "stream_check"))
		return cmd_stream_check(argc - 3, argv + 3);
	if (!strcmp(cmd, "bench_declare"))
		return cmd_bench_declare(argc - 3, argv + 3);
	fprintf(stderr, "ckpt_driver: unknown command %s\n", cmd);
	return 2;
}
