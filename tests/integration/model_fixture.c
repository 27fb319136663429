/*
 * The fixture of test_model_tool.sh: a checkpoint "base" under ROOT and two streaming deltas in
 * DELTA_DIR, with values the script can check in psplus-model's output.
 *
 *	psplus_model_fixture ROOT DELTA_DIR
 *
 * base:
 *   1 "bias"  dense  rows 4,   width 2, sgd:      row r = [r, r + 0.5]
 *   2 "emb"   sparse rows 100, width 3, adagrad:  row r = [r, -r, r / 4], accum = 0.1
 *   3 "ids"   hash64           width 2, adam:     keys 1..50 = [k, 2k], m = v = 0
 *   4 "pairs" hash128          width 1, ftrl:     keys (k, k + 1000), k = 1..20 = [k],
 *                                                 accum = 0.1, linear = 0
 *   every variable in 2 parts.
 * delta 1: emb rows 5, 7 = [50, 51, 52], [70, 71, 72] (values only); ids: delete 3, write 1000
 *          = [9, 9] (values only: a new key, fresh slots).
 * delta 2: bias rows 1..2 = [11, 11.5], [12, 12.5]; pairs: delete (2, 1002).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_io/ckpt.h"
#include "model_io/sm.h"

static char err[8192];

static void check(int rc, const char *what)
{
	if (rc) {
		fprintf(stderr, "model_fixture: %s: %d: %s\n", what, rc, err);
		exit(1);
	}
}

static void row_of(uint32_t var, uint64_t k, float *row)
{
	switch (var) {
	case 1:
		row[0] = (float)k;
		row[1] = (float)k + 0.5f;
		break;
	case 2:
		row[0] = (float)k;
		row[1] = -(float)k;
		row[2] = (float)k / 4;
		row[3] = row[4] = row[5] = 0.1f;
		break;
	case 3:
		row[0] = (float)k;
		row[1] = 2.0f * (float)k;
		row[2] = row[3] = row[4] = row[5] = 0;
		break;
	case 4:
		row[0] = (float)k;
		row[1] = 0.1f;
		row[2] = 0;
		break;
	}
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		enum ps_var_kind kind;
		uint64_t rows;
		uint32_t width;
		enum ps_optim_kind optim;
		uint32_t nslots;
	} vars[] = {
		{"bias", PS_VAR_DENSE, 4, 2, PS_OPTIM_SGD, 0},
		{"emb", PS_VAR_SPARSE, 100, 3, PS_OPTIM_ADAGRAD, 1},
		{"ids", PS_VAR_HASH64, 0, 2, PS_OPTIM_ADAM, 2},
		{"pairs", PS_VAR_HASH128, 0, 1, PS_OPTIM_FTRL, 2},
	};
	struct ps_ckpt_meta *m;
	char dir[4200], url[4200];
	struct ps_sm_writer *w;
	float row[8];

	if (argc != 3) {
		fprintf(stderr, "usage: psplus_model_fixture ROOT DELTA_DIR\n");
		return 2;
	}
	check(ps_ckpt_begin(argv[1], "base", dir, sizeof(dir), err, sizeof(err)), "begin");
	m = ps_ckpt_meta_create("base");
	m->cluster_version = 0xabcdef;
	m->server_count = 2;
	for (uint32_t i = 0; i < 4; i++) {
		struct ps_var_spec spec = {
			.kind = vars[i].kind, .rows = vars[i].rows, .width = vars[i].width};
		struct ps_ckpt_var *v;
		bool hash = vars[i].kind >= PS_VAR_HASH64;
		uint64_t dom = hash ? PS_HASH_BUCKETS : vars[i].rows;

		spec.optim = ps_optimizer_defaults(vars[i].optim);
		spec.init.kind = PS_INIT_TRUNCATED_NORMAL;
		spec.init.stddev = 0.05f;
		spec.init.seed = 42;
		v = ps_ckpt_meta_add_var(m, vars[i].name, i + 1, &spec, vars[i].nslots);
		for (uint64_t p = 0; p < 2; p++) {
			struct ps_ckpt_part_writer_opts o = {
				.dir = dir,
				.var_id = i + 1,
				.kind = vars[i].kind,
				.width = vars[i].width,
				.nslots = vars[i].nslots,
				.begin = dom * p / 2,
				.end = dom * (p + 1) / 2,
			};
			struct ps_ckpt_part_writer *pw;
			struct ps_ckpt_part_desc d;
			uint64_t n = hash ? (i == 2 ? 50 : 20) : vars[i].rows;

			check(ps_ckpt_part_writer_create(&o, &pw, err, sizeof(err)), "create");
			for (uint64_t k = hash ? 1 : 0; k < (hash ? n + 1 : n); k++) {
				uint64_t hi = i == 3 ? k + 1000 : 0;
				uint64_t x = !hash    ? k
					     : i == 2 ? ps_hash_bucket64(k)
						      : ps_hash_bucket128(k, hi);

				if (x < o.begin || x >= o.end)
					continue;
				row_of(i + 1, k, row);
				check(ps_ckpt_part_writer_append(pw, k, hi, row), "append");
			}
			check(ps_ckpt_part_writer_finish(pw, &d), "finish");
			d.state.step = 7;
			d.state.beta1_power = 0.9 * 0.9;
			d.state.beta2_power = 0.999 * 0.999;
			ps_ckpt_part_writer_destroy(pw);
			check(ps_ckpt_var_add_part(v, &d), "add part");
		}
	}
	check(ps_ckpt_commit(argv[1], m, err, sizeof(err)), "commit");
	ps_ckpt_meta_free(m);

	snprintf(url, sizeof(url), "file://%s", argv[2]);
	check(ps_sm_open_writer(url, &(struct ps_sm_writer_opts){.writer_id = 1}, &w, err,
				sizeof(err)),
	      "open writer");
	{
		uint64_t ids[2] = {5, 7}, del = 3, key = 1000;
		float v[6] = {50, 51, 52, 70, 71, 72}, hv[2] = {9, 9};
		struct ps_sm_sparse_model sp = {.var_name = "emb",
						.var_id = 2,
						.width = 3,
						.n = 2,
						.ids = ids,
						.values = v};
		struct ps_sm_hash_model hm = {.var_name = "ids",
					      .var_id = 3,
					      .width = 2,
					      .key_bits = 64,
					      .n = 1,
					      .keys = &key,
					      .values = hv,
					      .ndeleted = 1,
					      .deleted = &del};

		check(ps_sm_write_sparse(w, &sp), "write sparse");
		check(ps_sm_write_hash(w, &hm), "write hash");
		check(ps_sm_writer_commit(w), "commit delta 1");
	}
	{
		float v[4] = {11, 11.5f, 12, 12.5f};
		struct ps_key128 del = {2, 1002};
		struct ps_sm_dense_model dm = {.var_name = "bias",
					       .var_id = 1,
					       .width = 2,
					       .rows_begin = 1,
					       .nrows = 2,
					       .values = v};
		struct ps_sm_hash_model hm = {.var_name = "pairs",
					      .var_id = 4,
					      .width = 1,
					      .key_bits = 128,
					      .ndeleted = 1,
					      .deleted128 = &del};

		check(ps_sm_write_dense(w, &dm), "write dense");
		check(ps_sm_write_hash(w, &hm), "write hash128");
		check(ps_sm_writer_commit(w), "commit delta 2");
	}
	ps_sm_writer_close(w);
	return 0;
}
