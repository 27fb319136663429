/*
 * The client against a real cluster (driven by test_client_e2e.sh): a scheduler and servers
 * already running, found through the kv path.
 *
 *   client_e2e KV_URL basic     dense, sparse, hash64 and hash128 variables with SGD: pull, push,
 *                               pull again against values computed here; zero-copy and staged
 *                               paths; big calls split over many requests; bad input (id out of
 *                               range changes no row, unknown variable, wrong width, wrong
 *                               kind, re-declaration with another spec, push before declare);
 *                               four threads sharing one client
 *   client_e2e KV_URL bounded   two workers (threads, one client each), staleness 1: the fast
 *                               one waits exactly when it is more than one step ahead
 *   client_e2e KV_URL sync      two workers in synchronous mode: a push is not applied until
 *                               both pushed, then once with the summed gradients
 *
 * Prints one PASS/FAIL line per check; exits 0 when all passed.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <psplus/client.h>
#include <psplus/error.h>

#include "tests/integration/itest.h"

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static struct ps_var_spec sgd_spec(enum ps_var_kind kind, uint64_t rows, uint32_t width, float init,
				   float lr)
{
	struct ps_var_spec s = {.kind = kind, .rows = rows, .width = width};

	s.init.kind = PS_INIT_CONSTANT;
	s.init.value = init;
	s.optim = ps_optimizer_defaults(PS_OPTIM_SGD);
	s.optim.sgd.learning_rate = lr;
	return s;
}

/* Every float of @got equals @want within float rounding; reports the first mismatch. */
static bool same(const float *got, const float *want, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++) {
		if (fabsf(got[i] - want[i]) > 1e-5f * (1 + fabsf(want[i]))) {
			printf("  %s: float %zu is %.9g, expected %.9g\n", what, i, got[i],
			       want[i]);
			return false;
		}
	}
	return true;
}

static float grad_of(uint64_t id, uint32_t col)
{
	return (float)((id * 7 + col * 3) % 11) * 0.125f - 0.5f;
}

static uint64_t staged(struct ps_client *c)
{
	struct ps_client_stats st;

	ps_client_stats_get(c, &st);
	return st.bytes_staged;
}

static uint64_t requests(struct ps_client *c)
{
	struct ps_client_stats st;

	ps_client_stats_get(c, &st);
	return st.requests;
}

/* ---- basic ------------------------------------------------------------------------------------ */

#define D_ROWS 16
#define D_W    8
#define S_ROWS 100000 /* big enough to be cut into two parts, one per server */
#define S_W    4
#define H_W    6

static void basic_dense(struct ps_client *c)
{
	struct ps_var_spec s = sgd_spec(PS_VAR_DENSE, D_ROWS, D_W, 0.5f, 0.1f);
	float v[D_ROWS * D_W], g[D_ROWS * D_W], want[D_ROWS * D_W];
	uint32_t id, id2;
	int rc;

	itest_must(ps_client_declare(c, "dense", &s, &id), "declare dense");
	rc = ps_client_declare(c, "dense", &s, &id2);
	itest_check(!rc && id2 == id, "declaring 'dense' again gives the same id (%u)", id);
	s.width = D_W + 1;
	rc = ps_client_declare(c, "dense", &s, &id2);
	itest_check(rc == -EEXIST, "re-declaring 'dense' with width %u is -EEXIST (%s)", D_W + 1,
		    ps_err_name(rc));
	itest_must(ps_client_dense_pull(c, id, v, D_ROWS * D_W), "dense pull");
	for (int i = 0; i < D_ROWS * D_W; i++)
		want[i] = 0.5f;
	itest_check(same(v, want, D_ROWS * D_W, "dense"), "dense pull gives the initializer (0.5)");
	for (int i = 0; i < D_ROWS * D_W; i++) {
		g[i] = grad_of((uint64_t)i / D_W, (uint32_t)i % D_W);
		want[i] = 0.5f - 0.1f * g[i];
	}
	itest_must(ps_client_dense_push(c, id, g, D_ROWS * D_W), "dense push");
	itest_must(ps_client_dense_pull(c, id, v, D_ROWS * D_W), "dense pull");
	itest_check(same(v, want, D_ROWS * D_W, "dense"), "dense pull after push: 0.5 - 0.1 g");
	rc = ps_client_dense_pull(c, id, v, D_ROWS * D_W - 1);
	itest_check(rc == -EINVAL, "dense pull with the wrong size is -EINVAL (%s)",
		    ps_err_name(rc));
	rc = ps_client_dense_push(c, id, g, D_ROWS * D_W + D_W);
	itest_check(rc == -EINVAL, "dense push of a wrong width is -EINVAL (%s)", ps_err_name(rc));
	itest_must(ps_client_dense_pull(c, id, v, D_ROWS * D_W), "dense pull");
	itest_check(same(v, want, D_ROWS * D_W, "dense"), "the refused push changed nothing");
}

static void basic_sparse(struct ps_client *c)
{
	struct ps_var_spec s = sgd_spec(PS_VAR_SPARSE, S_ROWS, S_W, 1.0f, 0.5f);
	enum { N = 5000 };
	uint64_t *ids = malloc(S_ROWS * sizeof(*ids)), bad[3] = {5, S_ROWS, 7};
	float *out = malloc((size_t)S_ROWS * S_W * sizeof(float));
	float *g = malloc((size_t)S_ROWS * S_W * sizeof(float));
	float *want = malloc((size_t)S_ROWS * S_W * sizeof(float));
	uint8_t *cnt = calloc(S_ROWS, 1); /* times each row was pushed */
	struct ps_client_buf *bo = NULL, *bi = NULL;
	uint64_t st0, rq0;
	uint32_t id;
	int rc;

	itest_must(ps_client_declare(c, "sparse", &s, &id), "declare sparse");
	/* Scattered ids with repeats: rows go to both servers and both threads of each. */
	for (int i = 0; i < N; i++)
		ids[i] = ((uint64_t)i * 7919 + 13) % S_ROWS;
	ids[N - 1] = ids[0];
	ids[N - 2] = ids[0];
	itest_must(ps_client_sparse_pull(c, id, ids, N, out), "sparse pull");
	for (int i = 0; i < N * S_W; i++)
		want[i] = 1.0f;
	itest_check(same(out, want, (size_t)N * S_W, "sparse"),
		    "sparse pull of %d scattered ids: 1.0", N);
	for (int i = 0; i < N; i++)
		for (int j = 0; j < S_W; j++)
			g[i * S_W + j] = grad_of(ids[i], (uint32_t)j);
	itest_must(ps_client_sparse_push(c, id, ids, N, g), "sparse push");
	for (int i = 0; i < N; i++)
		cnt[ids[i]]++;
	itest_must(ps_client_sparse_pull(c, id, ids, N, out), "sparse pull");
	/* ids[0] appears three times: its gradients are summed before the one update. */
	for (int i = 0; i < N; i++)
		for (int j = 0; j < S_W; j++)
			want[i * S_W + j] = 1.0f - 0.5f * grad_of(ids[i], (uint32_t)j) *
							   (ids[i] == ids[0] ? 3 : 1);
	itest_check(same(out, want, (size_t)N * S_W, "sparse"),
		    "sparse pull after push: 1 - 0.5 g (a row pushed 3 times in one call: 3 g)");

	/* An id out of range fails the whole call before anything is sent: row 5 stays. */
	itest_must(ps_client_sparse_pull(c, id, &bad[0], 1, out), "sparse pull row 5");
	{
		float before[S_W], gb[3 * S_W];

		memcpy(before, out, sizeof(before));
		for (int i = 0; i < 3 * S_W; i++)
			gb[i] = 100.f;
		rc = ps_client_sparse_push(c, id, bad, 3, gb);
		itest_check(rc == PS_EOUT_OF_RANGE,
			    "push with id %d out of [0, %d) is PS_EOUT_OF_RANGE (%s)", S_ROWS,
			    S_ROWS, ps_err_name(rc));
		itest_check(strstr(ps_client_last_error(), "'sparse'") != NULL,
			    "the message names the variable: %s", ps_client_last_error());
		itest_must(ps_client_sparse_pull(c, id, &bad[0], 1, out), "sparse pull row 5");
		itest_check(same(out, before, S_W, "row 5"), "row 5 unchanged by the refused push");
		rc = ps_client_sparse_pull(c, id, bad, 3, out);
		itest_check(rc == PS_EOUT_OF_RANGE,
			    "pull with an id out of range is PS_EOUT_OF_RANGE");
	}

	/* Every row, ascending, through registered memory: zero copy both ways. */
	for (uint64_t i = 0; i < S_ROWS; i++)
		ids[i] = i;
	itest_must(ps_client_register_buffer(c, out, (size_t)S_ROWS * S_W * sizeof(float), &bo),
		   "register out");
	itest_must(ps_client_register_buffer(c, ids, S_ROWS * sizeof(*ids), &bi), "register ids");
	st0 = staged(c);
	rq0 = requests(c);
	itest_must(ps_client_sparse_pull(c, id, ids, S_ROWS, out), "sparse pull of every row");
	itest_check(staged(c) == st0,
		    "pull of %d grouped ids into registered memory staged nothing "
		    "(%" PRIu64 " bytes)",
		    S_ROWS, staged(c) - st0);
	itest_check(requests(c) - rq0 >= 8,
		    "a %d-row pull took %" PRIu64 " requests (split by size)", S_ROWS,
		    requests(c) - rq0);
	{
		bool ok = true;

		for (uint64_t r = 0; r < S_ROWS && ok; r++) {
			for (int j = 0; j < S_W && ok; j++) {
				float w = 1.0f - 0.5f * grad_of(r, (uint32_t)j) * cnt[r];

				ok = fabsf(out[r * S_W + j] - w) <= 1e-5f * (1 + fabsf(w));
				if (!ok)
					printf("  row %" PRIu64 " col %d: %g, expected %g\n", r, j,
					       out[r * S_W + j], w);
			}
		}
		itest_check(ok, "every one of the %d rows holds what the pushes made of it",
			    S_ROWS);
	}
	/* The same ids shuffled: rows staged and permuted, still right. */
	{
		float *o2 = malloc(64 * S_W * sizeof(float));
		uint64_t sid[64];

		for (int i = 0; i < 64; i++)
			sid[i] = (uint64_t)(63 - i) * 1500;
		st0 = staged(c);
		itest_must(ps_client_sparse_pull(c, id, sid, 64, o2), "shuffled pull");
		for (int i = 0; i < 64; i++)
			memcpy(&want[i * S_W], &out[sid[i] * S_W], S_W * sizeof(float));
		itest_check(same(o2, want, 64 * S_W, "shuffled") && staged(c) > st0,
			    "a pull in another order into plain memory is staged and permuted");
		free(o2);
	}
	ps_client_unregister_buffer(bi);
	ps_client_unregister_buffer(bo);
	free(cnt);
	free(ids);
	free(out);
	free(g);
	free(want);
}

static void basic_hash(struct ps_client *c)
{
	struct ps_var_spec s64 = sgd_spec(PS_VAR_HASH64, 0, H_W, 0.25f, 1.0f);
	struct ps_var_spec s128 = sgd_spec(PS_VAR_HASH128, 0, H_W, -2.0f, 0.5f);
	enum { N = 3000 };
	uint64_t *k64 = malloc(N * sizeof(*k64));
	struct ps_key128 *k128 = malloc(N * sizeof(*k128));
	float *out = malloc((size_t)N * H_W * sizeof(float));
	float *g = malloc((size_t)N * H_W * sizeof(float));
	float *want = malloc((size_t)N * H_W * sizeof(float));
	uint32_t h64, h128;
	int rc;

	itest_must(ps_client_declare(c, "hash64", &s64, &h64), "declare hash64");
	itest_must(ps_client_declare(c, "hash128", &s128, &h128), "declare hash128");
	for (int i = 0; i < N; i++) {
		k64[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
		k128[i] = (struct ps_key128){.lo = (uint64_t)i * 31, .hi = (uint64_t)i % 5};
		for (int j = 0; j < H_W; j++)
			g[i * H_W + j] = grad_of((uint64_t)i, (uint32_t)j);
	}
	itest_must(ps_client_hash_pull(c, h64, k64, N, out), "hash64 pull");
	for (int i = 0; i < N * H_W; i++)
		want[i] = 0.25f;
	itest_check(same(out, want, (size_t)N * H_W, "hash64"), "hash64 pull of %d new keys: 0.25",
		    N);
	itest_must(ps_client_hash_push(c, h64, k64, N, g), "hash64 push");
	itest_must(ps_client_hash_pull(c, h64, k64, N, out), "hash64 pull");
	for (int i = 0; i < N * H_W; i++)
		want[i] = 0.25f - g[i];
	itest_check(same(out, want, (size_t)N * H_W, "hash64"), "hash64 after push: 0.25 - g");

	itest_must(ps_client_hash128_push(c, h128, k128, N, g), "hash128 push (keys created)");
	itest_must(ps_client_hash128_pull(c, h128, k128, N, out), "hash128 pull");
	for (int i = 0; i < N * H_W; i++)
		want[i] = -2.0f - 0.5f * g[i];
	itest_check(same(out, want, (size_t)N * H_W, "hash128"),
		    "hash128 push then pull: -2 - 0.5 g");

	rc = ps_client_sparse_pull(c, h64, k64, 1, out);
	itest_check(rc == -EINVAL, "a sparse pull of a hash variable is -EINVAL (%s)",
		    ps_err_name(rc));
	rc = ps_client_hash_pull(c, h128, k64, 1, out);
	itest_check(rc == -EINVAL, "a hash64 pull of a hash128 variable is -EINVAL (%s)",
		    ps_err_name(rc));
	free(k64);
	free(k128);
	free(out);
	free(g);
	free(want);
}

/* Four threads share one client: calls are serialised, errors stay per thread. */
struct sharer {
	struct ps_client *c;
	uint32_t var, t;
	int rc;
	bool own_error; /* saw its own message after its bad call */
};

static void *sharer_main(void *arg)
{
	struct sharer *s = arg;
	uint64_t ids[250], bad = 1000;
	float g[250 * 4], out[250 * 4];

	for (int i = 0; i < 250; i++)
		ids[i] = s->t * 250 + (uint64_t)i;
	for (int i = 0; i < 250 * 4; i++)
		g[i] = 1.0f;
	for (int k = 0; k < 20 && !s->rc; k++) {
		s->rc = ps_client_sparse_push(s->c, s->var, ids, 250, g);
		if (!s->rc)
			s->rc = ps_client_sparse_pull(s->c, s->var, ids, 250, out);
		if (!s->rc && k == 10 && s->t == 2) {
			/* A bad call in the middle: this thread's message, nobody else's. */
			int rc = ps_client_sparse_pull(s->c, s->var, &bad, 1, out);

			s->own_error = rc == PS_EOUT_OF_RANGE &&
				       strstr(ps_client_last_error(), "id 1000") != NULL;
		}
	}
	return NULL;
}

static void basic_threads(struct ps_client *c)
{
	struct ps_var_spec s = sgd_spec(PS_VAR_SPARSE, 1000, 4, 0.0f, 1.0f);
	struct sharer sh[4];
	pthread_t th[4];
	float *out = malloc(1000 * 4 * sizeof(float)), want = -20.0f;
	uint64_t *ids = malloc(1000 * sizeof(*ids));
	bool ok = true;
	uint32_t id;

	itest_must(ps_client_declare(c, "shared", &s, &id), "declare shared");
	for (uint32_t t = 0; t < 4; t++) {
		sh[t] = (struct sharer){.c = c, .var = id, .t = t};
		pthread_create(&th[t], NULL, sharer_main, &sh[t]);
	}
	for (int t = 0; t < 4; t++) {
		pthread_join(th[t], NULL);
		ok &= !sh[t].rc;
	}
	itest_check(ok, "4 threads on one client: 20 pushes and pulls each");
	itest_check(sh[2].own_error, "the failing thread read its own error message");
	itest_check(!strstr(ps_client_last_error(), "id 1000"),
		    "other threads' messages stay theirs");
	for (uint64_t i = 0; i < 1000; i++)
		ids[i] = i;
	itest_must(ps_client_sparse_pull(c, id, ids, 1000, out), "pull shared");
	for (int i = 0; i < 4000 && ok; i++)
		ok = out[i] == want;
	itest_check(ok, "every row of 'shared' got its 20 updates (-20)");
	free(out);
	free(ids);
}

/*
 * A sparse variable larger than one server's budget: 300,000 rows x 4 floats (4.8 MB) on two
 * 4 MiB servers. The placementer used to cut it into five parts over the two servers, and the
 * server holding a second part refused its DECLARE (-EEXIST); now it is two parts, one per
 * server. Rows at both ends of the id range (one on each server) and in between are pulled,
 * pushed and pulled again, then every row.
 */
#define B_ROWS 300000

static void basic_big_sparse(struct ps_client *c)
{
	struct ps_var_spec s = sgd_spec(PS_VAR_SPARSE, B_ROWS, S_W, 2.0f, 0.5f);
	enum { N = 3000 };
	uint64_t *ids = malloc(B_ROWS * sizeof(*ids));
	float *out = malloc((size_t)B_ROWS * S_W * sizeof(float));
	float *g = malloc((size_t)N * S_W * sizeof(float));
	float *want = malloc((size_t)N * S_W * sizeof(float));
	uint8_t *pushed = calloc(B_ROWS, 1);
	bool ok = true;
	uint32_t id;
	int rc;

	rc = ps_client_declare(c, "big_sparse", &s, &id);
	itest_check(rc == 0,
		    "declare a %d-row sparse variable (4.8 MB) over two 4 MiB servers (%s)", B_ROWS,
		    ps_err_name(rc));
	if (rc)
		goto out;
	/* The first 1,000 rows, the last 1,000, and 1,000 distinct rows between them. */
	for (int i = 0; i < 1000; i++) {
		ids[i] = (uint64_t)i;
		ids[1000 + i] = B_ROWS - 1000 + (uint64_t)i;
		ids[2000 + i] = 1000 + (uint64_t)i * 297;
	}
	itest_must(ps_client_sparse_pull(c, id, ids, N, out), "big_sparse pull");
	for (int i = 0; i < N * S_W; i++)
		want[i] = 2.0f;
	itest_check(same(out, want, (size_t)N * S_W, "big_sparse"),
		    "big_sparse: rows 0..999, %d..%d and between pulled: 2.0", B_ROWS - 1000,
		    B_ROWS - 1);
	for (int i = 0; i < N; i++) {
		pushed[ids[i]] = 1;
		for (int j = 0; j < S_W; j++) {
			g[i * S_W + j] = grad_of(ids[i], (uint32_t)j);
			want[i * S_W + j] = 2.0f - 0.5f * g[i * S_W + j];
		}
	}
	itest_must(ps_client_sparse_push(c, id, ids, N, g), "big_sparse push");
	itest_must(ps_client_sparse_pull(c, id, ids, N, out), "big_sparse pull after push");
	itest_check(same(out, want, (size_t)N * S_W, "big_sparse"),
		    "big_sparse: the pushed rows at both ends hold 2 - 0.5 g");
	for (uint64_t r = 0; r < B_ROWS; r++)
		ids[r] = r;
	itest_must(ps_client_sparse_pull(c, id, ids, B_ROWS, out), "big_sparse pull of every row");
	for (uint64_t r = 0; r < B_ROWS && ok; r++) {
		for (int j = 0; j < S_W && ok; j++) {
			float w = pushed[r] ? 2.0f - 0.5f * grad_of(r, (uint32_t)j) : 2.0f;

			ok = fabsf(out[r * S_W + j] - w) <= 1e-5f * (1 + fabsf(w));
			if (!ok)
				printf("  row %" PRIu64 " col %d: %g, expected %g\n", r, j,
				       out[r * S_W + j], w);
		}
	}
	itest_check(ok, "big_sparse: every one of the %d rows holds what the pushes made of it",
		    B_ROWS);
out:
	free(pushed);
	free(want);
	free(g);
	free(out);
	free(ids);
}

static int run_basic(void)
{
	const char *want = getenv("PS_E2E_TRANSPORT") ? getenv("PS_E2E_TRANSPORT") : "tcp";
	struct ps_client *c = itest_client(0, 1, PS_SYNC_ASYNC, 0), *c2;
	struct ps_client_stats st;
	float f[4];
	uint64_t id0 = 0;
	int rc;

	ps_client_stats_get(c, &st);
	itest_check(!strcmp(st.transport, want), "client transport: %s (servers: %s)", st.transport,
		    want);
	basic_dense(c);
	basic_sparse(c);
	basic_hash(c);
	basic_threads(c);
	basic_big_sparse(c);
	rc = ps_client_sparse_pull(c, 999, &id0, 1, f);
	itest_check(rc == PS_EUNKNOWN_VAR, "pull of unknown variable 999 is PS_EUNKNOWN_VAR (%s)",
		    ps_err_name(rc));
	/* Another worker that did not declare 'sparse' cannot push to its id. */
	c2 = itest_client(0, 1, PS_SYNC_ASYNC, 0);
	rc = ps_client_sparse_push(c2, 2, &id0, 1, f);
	itest_check(rc == PS_EUNKNOWN_VAR, "push before declare is PS_EUNKNOWN_VAR (%s)",
		    ps_err_name(rc));
	ps_client_destroy(c2);
	ps_client_stats_get(c, &st);
	if (!strcmp(want, "rdma"))
		itest_check(st.transport_copied == 0,
			    "the rdma transport copied no payload (%" PRIu64 " B)",
			    st.transport_copied);
	printf("stats: requests %" PRIu64 ", retries %" PRIu64 ", pulled %" PRIu64
	       " B, pushed %" PRIu64 " B, staged %" PRIu64 " B, transport copied %" PRIu64 " B\n",
	       st.requests, st.retries, st.bytes_pulled, st.bytes_pushed, st.bytes_staged,
	       st.transport_copied);
	ps_client_destroy(c);
	return itest_status();
}

/* ---- bounded staleness ------------------------------------------------------------------------ */

struct worker {
	struct ps_client *c;
	uint32_t id;
	double t[4]; /* when each step_end returned, ms */
	int rc[4];
};

static void *slow_worker(void *arg)
{
	struct worker *w = arg;

	for (int s = 0; s < 3; s++) {
		usleep(400 * 1000);
		w->rc[s] = ps_client_step_end(w->c, (uint64_t)s);
		w->t[s] = now_ms();
	}
	return NULL;
}

static int run_bounded(void)
{
	struct worker fast = {.id = 0}, slow = {.id = 1};
	pthread_t th;
	double t0;

	fast.c = itest_client(0, 2, PS_SYNC_BOUNDED, 1);
	slow.c = itest_client(1, 2, PS_SYNC_BOUNDED, 1);
	t0 = now_ms();
	pthread_create(&th, NULL, slow_worker, &slow);
	for (int s = 0; s < 3; s++) {
		fast.rc[s] = ps_client_step_end(fast.c, (uint64_t)s);
		fast.t[s] = now_ms();
	}
	pthread_join(th, NULL);
	for (int s = 0; s < 3; s++)
		itest_check(!fast.rc[s] && !slow.rc[s], "step_end(%d) succeeded for both workers",
			    s);
	/* Step 0: within staleness of nobody; step 1 needs the slow one past step 0, step 2
	 * past step 1. */
	itest_check(fast.t[0] - t0 < 300, "fast worker ended step 0 at once (%.0f ms)",
		    fast.t[0] - t0);
	itest_check(
		fast.t[1] >= slow.t[0] - 5 && fast.t[1] - t0 >= 350,
		"fast worker's step_end(1) waited for the slow worker's step 0 (%.0f ms, slow at "
		"%.0f ms)",
		fast.t[1] - t0, slow.t[0] - t0);
	itest_check(fast.t[2] >= slow.t[1] - 5,
		    "fast worker's step_end(2) waited for slow step 1 "
		    "(%.0f vs %.0f ms)",
		    fast.t[2] - t0, slow.t[1] - t0);
	itest_check(slow.t[2] - slow.t[1] < 500, "the slow worker never waits (%.0f ms per step)",
		    slow.t[2] - slow.t[1]);
	ps_client_destroy(fast.c);
	ps_client_destroy(slow.c);
	return itest_status();
}

/* ---- synchronous steps ------------------------------------------------------------------------ */

#define SY_ROWS 8
#define SY_W	4

struct sync_worker {
	struct ps_client *c;
	uint32_t id, dense, sparse;
	float dense_mid[SY_ROWS * SY_W]; /* worker 0: pulled after its own push, before w1's */
	float dense_end[SY_ROWS * SY_W];
	float sparse_end[3 * SY_W];
	int rc;
};

static void *sync_worker(void *arg)
{
	struct sync_worker *w = arg;
	struct ps_var_spec sd = sgd_spec(PS_VAR_DENSE, SY_ROWS, SY_W, 1.0f, 0.5f);
	struct ps_var_spec ss = sgd_spec(PS_VAR_SPARSE, 1000, SY_W, 1.0f, 0.5f);
	float g[SY_ROWS * SY_W];
	uint64_t ids[2] = {w->id + 1, w->id + 2}; /* w0: 1, 2; w1: 2, 3 */
	uint64_t all[3] = {1, 2, 3};
	int rc;

	rc = ps_client_declare(w->c, "sync_dense", &sd, &w->dense);
	if (!rc)
		rc = ps_client_declare(w->c, "sync_sparse", &ss, &w->sparse);
	for (int i = 0; i < SY_ROWS * SY_W; i++)
		g[i] = (float)(w->id + 1); /* w0: 1, w1: 2 */
	/* Worker 0 pushes first and looks: nothing is applied until worker 1 pushed. */
	if (!rc && w->id == 1)
		rc = ps_client_barrier(w->c);
	if (!rc)
		rc = ps_client_dense_push(w->c, w->dense, g, SY_ROWS * SY_W);
	if (!rc)
		rc = ps_client_sparse_push(w->c, w->sparse, ids, 2, g);
	if (!rc && w->id == 0)
		rc = ps_client_dense_pull(w->c, w->dense, w->dense_mid, SY_ROWS * SY_W);
	if (!rc && w->id == 0)
		rc = ps_client_barrier(w->c);
	if (!rc)
		rc = ps_client_step_end(w->c, 0);
	if (!rc)
		rc = ps_client_dense_pull(w->c, w->dense, w->dense_end, SY_ROWS * SY_W);
	if (!rc)
		rc = ps_client_sparse_pull(w->c, w->sparse, all, 3, w->sparse_end);
	if (rc)
		printf("  worker %u: %s: %s\n", w->id, ps_err_name(rc), ps_client_last_error());
	w->rc = rc;
	return NULL;
}

static int run_sync(void)
{
	struct sync_worker w[2] = {{.id = 0}, {.id = 1}};
	float want[SY_ROWS * SY_W];
	pthread_t th[2];

	w[0].c = itest_client(0, 2, PS_SYNC_SYNC, 0);
	w[1].c = itest_client(1, 2, PS_SYNC_SYNC, 0);
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, sync_worker, &w[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	itest_check(!w[0].rc && !w[1].rc, "both workers: declare, push, barrier, step_end, pull");
	for (int i = 0; i < SY_ROWS * SY_W; i++)
		want[i] = 1.0f;
	itest_check(same(w[0].dense_mid, want, SY_ROWS * SY_W, "mid"),
		    "worker 0's own push is not applied before worker 1 pushed");
	for (int i = 0; i < SY_ROWS * SY_W; i++)
		want[i] = 1.0f - 0.5f * 3.0f;
	itest_check(same(w[0].dense_end, want, SY_ROWS * SY_W, "end0") &&
			    same(w[1].dense_end, want, SY_ROWS * SY_W, "end1"),
		    "after step_end both see one update with the summed gradient: 1 - 0.5 (1 + 2)");
	{
		float ws[3 * SY_W];

		for (int j = 0; j < SY_W; j++) {
			ws[j] = 1.0f - 0.5f * 1.0f;	       /* row 1: worker 0 only */
			ws[SY_W + j] = 1.0f - 0.5f * 3.0f;     /* row 2: both */
			ws[2 * SY_W + j] = 1.0f - 0.5f * 2.0f; /* row 3: worker 1 only */
		}
		itest_check(same(w[0].sparse_end, ws, 3 * SY_W, "sparse0") &&
				    same(w[1].sparse_end, ws, 3 * SY_W, "sparse1"),
			    "sparse rows after the sync step: each worker's rows, row 2 summed");
	}
	ps_client_destroy(w[0].c);
	ps_client_destroy(w[1].c);
	return itest_status();
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s KV_URL basic|bounded|sync\n", argv[0]);
		return 2;
	}
	itest_client_setup(argv[1], "auto", 10000);
	if (!strcmp(argv[2], "basic"))
		return run_basic();
	if (!strcmp(argv[2], "bounded"))
		return run_bounded();
	if (!strcmp(argv[2], "sync"))
		return run_sync();
	fprintf(stderr, "unknown test %s\n", argv[2]);
	return 2;
}
