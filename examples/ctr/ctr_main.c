/*
 * psplus-ctr: a click-through-rate worker that trains through a psplus cluster.
 *
 * It generates the synthetic data with a planted model (ctr_data.h), declares an embedding
 * (PS_VAR_HASH64) and a dense layer (PS_VAR_DENSE) on the cluster, and trains them with the
 * server-side optimizer (ctr_train.h, ctr_model.h). After every epoch it prints the mean train
 * loss, the test loss and AUC, and the planted model's AUC; the last line is
 *
 *	demo: auc=<model AUC> planted_auc=<planted AUC>
 *
 * Several workers (--workers N, --worker-id I) each take a disjoint slice of the train split
 * and evaluate on the whole test split.
 *
 * Exit codes: 0 trained, 1 runtime failure (cluster, memory), 2 bad command line.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <psplus/client.h>

#include "ctr_data.h"
#include "ctr_model.h"
#include "ctr_train.h"

#define EXIT_USAGE 2

/* Buffers the trainer offers for registration: rows, row gradients, dense, dense gradient. */
#define MAX_BUFS 8

struct ctr_opts {
	const char *kv;
	const char *transport;
	const char *name; /* variables <name>_emb and <name>_dense */
	uint32_t epochs;
	uint32_t batch;
	uint32_t width;
	enum ps_optim_kind optim;
	float lr; /* 0: the optimizer's demo default */
	uint64_t seed;
	uint64_t train;
	uint64_t test;
	uint32_t workers;
	uint32_t worker_id;
	uint32_t timeout_ms;
};

/* The store ops' context: the client and the two variables. */
struct cluster {
	struct ps_client *c;
	uint32_t emb;	/* the hash embedding's variable id */
	uint32_t dense; /* the dense layer's */
	struct ps_client_buf *bufs[MAX_BUFS];
	unsigned nbufs;
	int reg_warned; /* the registration warning was printed */
};

/* Progress display: a bar redrawn in place on a terminal, a line per quarter otherwise. */
struct progress {
	int tty;
	uint32_t epoch; /* 1-based */
	uint32_t epochs;
	int last_quarter; /* plain mode: the last quarter printed */
	double t0;	  /* when the current phase started */
	const char *phase;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: psplus-ctr --kv URL [options]\n"
		"Train a click-through-rate model on synthetic data through a psplus cluster.\n"
		"\n"
		"  --kv URL            the scheduler's kv path (file:///path or zk://host:port/path)\n"
		"  --epochs N          passes over the train slice (default 2)\n"
		"  --batch N           examples per step (default 512)\n"
		"  --width N           embedding width (default %d)\n"
		"  --optimizer NAME    adagrad (default) or adam\n"
		"  --lr X              learning rate (default: adagrad %g, adam %g)\n"
		"  --seed N            data and initialisation seed (default 1)\n"
		"  --train N           train examples in the job, all workers together (default "
		"200000)\n"
		"  --test N            test examples (default 50000)\n"
		"  --workers N         workers in the job (default 1)\n"
		"  --worker-id I       this worker, 0-based (default 0)\n"
		"  --transport T       auto (default), tcp or rdma\n"
		"  --timeout-ms N      bound on every cluster call (default 30000)\n"
		"  --name NAME         the variables NAME_emb and NAME_dense (default ctr; another\n"
		"                      NAME trains a fresh model on a cluster that holds one)\n"
		"  --help              this text\n",
		CTR_DEFAULT_WIDTH, (double)CTR_DEFAULT_ADAGRAD_LR, (double)CTR_DEFAULT_ADAM_LR);
}

/* Parse @s as an integer in [min, max] for option @name; exits with a message otherwise. */
static uint64_t parse_u64(const char *name, const char *s, uint64_t min, uint64_t max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max) {
		fprintf(stderr,
			"psplus-ctr: --%s: '%s' is not an integer in [%" PRIu64 ", %" PRIu64 "]\n",
			name, s, min, max);
		exit(EXIT_USAGE);
	}
	return v;
}

static float parse_lr(const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || v > 1e3) {
		fprintf(stderr, "psplus-ctr: --lr: '%s' is not a number in (0, 1000]\n", s);
		exit(EXIT_USAGE);
	}
	return (float)v;
}

static void parse_args(int argc, char **argv, struct ctr_opts *o)
{
	enum {
		O_KV = 256,
		O_EPOCHS,
		O_BATCH,
		O_WIDTH,
		O_OPTIM,
		O_LR,
		O_SEED,
		O_TRAIN,
		O_TEST,
		O_WORKERS,
		O_WORKER_ID,
		O_TRANSPORT,
		O_TIMEOUT,
		O_NAME,
		O_HELP
	};
	static const struct option longopts[] = {
		{"kv", required_argument, NULL, O_KV},
		{"epochs", required_argument, NULL, O_EPOCHS},
		{"batch", required_argument, NULL, O_BATCH},
		{"width", required_argument, NULL, O_WIDTH},
		{"optimizer", required_argument, NULL, O_OPTIM},
		{"lr", required_argument, NULL, O_LR},
		{"seed", required_argument, NULL, O_SEED},
		{"train", required_argument, NULL, O_TRAIN},
		{"test", required_argument, NULL, O_TEST},
		{"workers", required_argument, NULL, O_WORKERS},
		{"worker-id", required_argument, NULL, O_WORKER_ID},
		{"transport", required_argument, NULL, O_TRANSPORT},
		{"timeout-ms", required_argument, NULL, O_TIMEOUT},
		{"name", required_argument, NULL, O_NAME},
		{"help", no_argument, NULL, O_HELP},
		{NULL, 0, NULL, 0},
	};
	int c;

	*o = (struct ctr_opts){
		.transport = "auto",
		.name = "ctr",
		.epochs = 2,
		.batch = 512,
		.width = CTR_DEFAULT_WIDTH,
		.optim = PS_OPTIM_ADAGRAD,
		.seed = 1,
		.train = 200000,
		.test = 50000,
		.workers = 1,
		.timeout_ms = 30000,
	};
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		switch (c) {
		case O_KV:
			o->kv = optarg;
			break;
		case O_EPOCHS:
			o->epochs = (uint32_t)parse_u64("epochs", optarg, 1, 1000);
			break;
		case O_BATCH:
			o->batch = (uint32_t)parse_u64("batch", optarg, 1, 65536);
			break;
		case O_WIDTH:
			o->width = (uint32_t)parse_u64("width", optarg, 1, 256);
			break;
		case O_OPTIM:
			if (!strcmp(optarg, "adagrad")) {
				o->optim = PS_OPTIM_ADAGRAD;
			} else if (!strcmp(optarg, "adam")) {
				o->optim = PS_OPTIM_ADAM;
			} else {
				fprintf(stderr,
					"psplus-ctr: --optimizer: '%s' is not adagrad or adam\n",
					optarg);
				exit(EXIT_USAGE);
			}
			break;
		case O_LR:
			o->lr = parse_lr(optarg);
			break;
		case O_SEED:
			o->seed = parse_u64("seed", optarg, 0, UINT64_MAX);
			break;
		case O_TRAIN:
			o->train = parse_u64("train", optarg, 1, UINT64_C(1) << 40);
			break;
		case O_TEST:
			/* Every test logit is kept for the exact AUC: bound the memory. */
			o->test = parse_u64("test", optarg, 2, UINT64_C(1) << 28);
			break;
		case O_WORKERS:
			o->workers = (uint32_t)parse_u64("workers", optarg, 1, 65536);
			break;
		case O_WORKER_ID:
			o->worker_id = (uint32_t)parse_u64("worker-id", optarg, 0, 65535);
			break;
		case O_TRANSPORT:
			if (strcmp(optarg, "auto") && strcmp(optarg, "tcp") &&
			    strcmp(optarg, "rdma")) {
				fprintf(stderr,
					"psplus-ctr: --transport: '%s' is not auto, tcp or rdma\n",
					optarg);
				exit(EXIT_USAGE);
			}
			o->transport = optarg;
			break;
		case O_TIMEOUT:
			o->timeout_ms = (uint32_t)parse_u64("timeout-ms", optarg, 1, 3600000);
			break;
		case O_NAME:
			/* The cluster takes names of 1 to 63 bytes; leave room for "_dense". */
			if (!*optarg || strlen(optarg) > 56) {
				fprintf(stderr, "psplus-ctr: --name: '%s' is not 1 to 56 bytes\n",
					optarg);
				exit(EXIT_USAGE);
			}
			o->name = optarg;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		case ':':
			fprintf(stderr, "psplus-ctr: %s needs a value\n", argv[optind - 1]);
			exit(EXIT_USAGE);
		default:
			fprintf(stderr, "psplus-ctr: unknown option '%s' (see --help)\n",
				argv[optind - 1]);
			exit(EXIT_USAGE);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "psplus-ctr: unexpected argument '%s' (see --help)\n",
			argv[optind]);
		exit(EXIT_USAGE);
	}
	if (!o->kv) {
		fprintf(stderr, "psplus-ctr: --kv is required (see --help)\n");
		exit(EXIT_USAGE);
	}
	if (o->worker_id >= o->workers) {
		fprintf(stderr,
			"psplus-ctr: --worker-id: %" PRIu32 " is not below --workers %" PRIu32 "\n",
			o->worker_id, o->workers);
		exit(EXIT_USAGE);
	}
	if (o->train < o->workers) {
		fprintf(stderr,
			"psplus-ctr: --train: %" PRIu64 " examples for %" PRIu32
			" workers leaves a worker with none\n",
			o->train, o->workers);
		exit(EXIT_USAGE);
	}
}

/* ---- the store ops over the psplus client ------------------------------------------------ */

static int cl_hash_pull(void *ctx, const uint64_t *keys, size_t n, float *rows)
{
	struct cluster *cl = ctx;

	return ps_client_hash_pull(cl->c, cl->emb, keys, n, rows);
}

static int cl_hash_push(void *ctx, const uint64_t *keys, size_t n, const float *grads)
{
	struct cluster *cl = ctx;

	return ps_client_hash_push(cl->c, cl->emb, keys, n, grads);
}

static int cl_dense_pull(void *ctx, float *dense, size_t n)
{
	struct cluster *cl = ctx;

	return ps_client_dense_pull(cl->c, cl->dense, dense, n);
}

static int cl_dense_push(void *ctx, const float *grad, size_t n)
{
	struct cluster *cl = ctx;

	return ps_client_dense_push(cl->c, cl->dense, grad, n);
}

static int cl_step_end(void *ctx, uint64_t step)
{
	struct cluster *cl = ctx;

	return ps_client_step_end(cl->c, step);
}

/*
 * Registration only saves a copy: on failure the buffer still works through the client's
 * staging buffers, so say so once and go on.
 */
static int cl_register_buffer(void *ctx, void *addr, size_t len)
{
	struct cluster *cl = ctx;
	int rc = -ENOSPC;

	if (cl->nbufs < MAX_BUFS)
		rc = ps_client_register_buffer(cl->c, addr, len, &cl->bufs[cl->nbufs]);
	if (!rc) {
		cl->nbufs++;
	} else if (!cl->reg_warned) {
		cl->reg_warned = 1;
		fprintf(stderr,
			"psplus-ctr: buffer registration failed (%s): pulls and pushes go "
			"through staging copies\n",
			ps_strerror(rc));
	}
	return 0;
}

static const struct ctr_store_ops cluster_ops = {
	.hash_pull = cl_hash_pull,
	.hash_push = cl_hash_push,
	.dense_pull = cl_dense_pull,
	.dense_push = cl_dense_push,
	.step_end = cl_step_end,
	.register_buffer = cl_register_buffer,
};

/* ---- progress ---------------------------------------------------------------------------- */

static void on_progress(void *arg, const char *phase, uint64_t done, uint64_t total)
{
	struct progress *p = arg;
	double frac = total ? (double)done / (double)total : 1.0;
	double dt;

	if (p->phase != phase || done == 0) {
		p->phase = phase;
		p->t0 = now_s();
		p->last_quarter = 0;
	}
	dt = now_s() - p->t0;
	if (p->tty) {
		char bar[31];
		int fill = (int)(frac * 30);

		memset(bar, '#', (size_t)fill);
		memset(bar + fill, '.', (size_t)(30 - fill));
		bar[30] = '\0';
		fprintf(stderr, "\repoch %" PRIu32 "/%" PRIu32 " %-5s [%s] %3d%% %8.0f ex/s",
			p->epoch, p->epochs, phase, bar, (int)(frac * 100),
			dt > 0 ? (double)done / dt : 0.0);
		if (done == total)
			fprintf(stderr, "\r%*s\r", 79, "");
		fflush(stderr);
	} else if ((int)(frac * 4) > p->last_quarter) {
		p->last_quarter = (int)(frac * 4);
		fprintf(stderr,
			"epoch %" PRIu32 "/%" PRIu32 " %s: %" PRIu64 "/%" PRIu64
			" (%d%%, %.0f ex/s)\n",
			p->epoch, p->epochs, phase, done, total, (int)(frac * 100),
			dt > 0 ? (double)done / dt : 0.0);
	}
}

/* ---- main -------------------------------------------------------------------------------- */

/* Declare <name>_<what>, with a hint when another job's variable holds the name. */
static int declare_one(struct ps_client *c, const char *name, const char *what,
		       const struct ps_var_spec *spec, const struct ps_var_load *load, uint32_t *id)
{
	char full[64];
	int rc;

	snprintf(full, sizeof(full), "%s_%s", name, what);
	rc = ps_client_declare_load(c, full, spec, load, id);
	if (rc)
		fprintf(stderr, "psplus-ctr: declare %s: %s (%s)%s\n", full, ps_strerror(rc),
			ps_client_last_error(),
			rc == -EEXIST ? "; another --name trains a fresh model" : "");
	return rc;
}

static int declare_vars(struct cluster *cl, const struct ctr_opts *o, const struct ctr_data_opts *d)
{
	struct ps_optimizer optim = ps_optimizer_defaults(o->optim);
	struct ps_var_spec emb = {
		.kind = PS_VAR_HASH64,
		.width = o->width,
		.init = {.kind = PS_INIT_NORMAL, .stddev = CTR_EMB_INIT_STDDEV, .seed = o->seed},
	};
	struct ps_var_spec dense = {
		.kind = PS_VAR_DENSE,
		.rows = 1,
		.width = ctr_model_dense_width(d->nfields, o->width),
		.init = {.kind = PS_INIT_NORMAL, .stddev = CTR_DENSE_INIT_STDDEV, .seed = o->seed},
	};
	/*
	 * Load hints for the placementer, for the whole job: a step of every worker pulls and
	 * pushes at most batch x nfields distinct rows and the dense row once; the keys are at
	 * most the vocabularies' total (the Zipf tail is mostly never drawn: an upper bound).
	 */
	struct ps_var_load emb_load = {
		.rows_read_per_step = (double)o->batch * d->nfields * o->workers,
		.rows_pushed_per_step = (double)o->batch * d->nfields * o->workers,
	};
	struct ps_var_load dense_load = {
		.rows_read_per_step = o->workers,
		.rows_pushed_per_step = o->workers,
	};
	int rc;

	for (uint32_t f = 0; f < d->nfields; f++)
		emb_load.expected_keys += d->vocab[f];
	if (o->optim == PS_OPTIM_ADAM)
		optim.adam.learning_rate = o->lr > 0 ? o->lr : CTR_DEFAULT_ADAM_LR;
	else
		optim.adagrad.learning_rate = o->lr > 0 ? o->lr : CTR_DEFAULT_ADAGRAD_LR;
	emb.optim = optim;
	dense.optim = optim;
	rc = declare_one(cl->c, o->name, "emb", &emb, &emb_load, &cl->emb);
	if (!rc)
		rc = declare_one(cl->c, o->name, "dense", &dense, &dense_load, &cl->dense);
	return rc;
}

/* Train and evaluate every epoch; the last evaluation into @ev. */
static int train(const struct ctr_opts *o, struct cluster *cl, const struct ctr_data *data,
		 struct ctr_eval_result *ev)
{
	struct progress prog = {.tty = isatty(STDERR_FILENO), .epochs = o->epochs};
	struct ctr_train_opts to = {
		.data = data,
		.ops = &cluster_ops,
		.ctx = cl,
		.width = o->width,
		.batch = o->batch,
		.train_begin = o->train * o->worker_id / o->workers,
		.train_end = o->train * (o->worker_id + 1) / o->workers,
		.test_n = o->test,
		.progress = on_progress,
		.progress_arg = &prog,
	};
	struct ctr_trainer *t;
	int rc;

	printf("psplus-ctr: worker %" PRIu32 "/%" PRIu32 ": train examples [%" PRIu64 ", %" PRIu64
	       "), test %" PRIu64 ", batch %" PRIu32 ", %s lr %g\n",
	       o->worker_id, o->workers, to.train_begin, to.train_end, o->test, o->batch,
	       o->optim == PS_OPTIM_ADAM ? "adam" : "adagrad",
	       (double)(o->lr > 0 ? o->lr
				  : (o->optim == PS_OPTIM_ADAM ? CTR_DEFAULT_ADAM_LR
							       : CTR_DEFAULT_ADAGRAD_LR)));
	fflush(stdout);
	rc = ctr_trainer_create(&to, &t);
	if (rc) {
		fprintf(stderr, "psplus-ctr: trainer: %s (%s)\n", ps_strerror(rc),
			ps_client_last_error());
		return rc;
	}
	for (uint32_t e = 1; e <= o->epochs && !rc; e++) {
		struct ctr_epoch_result er;
		double t0 = now_s(), t1;

		prog.epoch = e;
		rc = ctr_trainer_epoch(t, &er);
		/* Evaluate the model every worker contributed to, not a half-updated one. */
		if (!rc && o->workers > 1)
			rc = ps_client_barrier(cl->c);
		t1 = now_s();
		if (!rc)
			rc = ctr_trainer_eval(t, ev);
		if (rc) {
			fprintf(stderr, "psplus-ctr: epoch %" PRIu32 ": %s (%s)\n", e,
				ps_strerror(rc), ps_client_last_error());
			break;
		}
		printf("epoch %" PRIu32 "/%" PRIu32 ": train_loss=%.4f test_loss=%.4f auc=%.4f "
		       "planted_loss=%.4f planted_auc=%.4f (train %.1f s, %.0f ex/s; test %.1f s)\n",
		       e, o->epochs, er.train_loss, ev->test_loss, ev->auc, ev->planted_loss,
		       ev->planted_auc, t1 - t0, (double)er.examples / (t1 - t0), now_s() - t1);
		fflush(stdout);
	}
	ctr_trainer_destroy(t);
	return rc;
}

int main(int argc, char **argv)
{
	struct ctr_opts o;
	struct ctr_data_opts dopts = ctr_data_opts_default();
	struct ps_client_opts copts = ps_client_opts_default();
	struct ps_client_stats st;
	struct ctr_eval_result ev;
	struct cluster cl = {0};
	struct ctr_data *data = NULL;
	double t0 = now_s();
	int rc;

	parse_args(argc, argv, &o);
	dopts.seed = o.seed;
	rc = ctr_data_create(&dopts, &data);
	if (rc) {
		fprintf(stderr, "psplus-ctr: data: %s\n", ps_strerror(rc));
		return 1;
	}
	copts.kv_path = o.kv;
	copts.transport = o.transport;
	copts.worker_id = o.worker_id;
	copts.num_workers = o.workers;
	copts.sync_mode = PS_SYNC_ASYNC;
	copts.timeout_ms = o.timeout_ms;
	rc = ps_client_create(&copts, &cl.c);
	if (rc) {
		fprintf(stderr, "psplus-ctr: connect to %s: %s (%s)\n", o.kv, ps_strerror(rc),
			ps_client_last_error());
		ctr_data_destroy(data);
		return 1;
	}
	rc = declare_vars(&cl, &o, &dopts);
	if (!rc)
		rc = train(&o, &cl, data, &ev);
	if (!rc) {
		ps_client_stats_get(cl.c, &st);
		printf("psplus-ctr: %.*s transport, %" PRIu64 " requests (%" PRIu64
		       " retried), %.1f MB pulled, %.1f MB pushed, %.1f s in all\n",
		       (int)sizeof(st.transport), st.transport, st.requests, st.retries,
		       (double)st.bytes_pulled / 1e6, (double)st.bytes_pushed / 1e6, now_s() - t0);
		printf("psplus-ctr: test click rate %.3f; the model is %.4f below the planted AUC\n",
		       ev.click_rate, ev.planted_auc - ev.auc);
		/* The last line, which scripts/demo.sh reads. */
		printf("demo: auc=%.4f planted_auc=%.4f\n", ev.auc, ev.planted_auc);
	}
	while (cl.nbufs)
		ps_client_unregister_buffer(cl.bufs[--cl.nbufs]);
	ps_client_destroy(cl.c);
	ctr_data_destroy(data);
	return rc ? 1 : 0;
}
