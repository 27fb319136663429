/*
 * Example psplus plugin: a streaming-model writer for the scheme `count://`.
 *
 *	psplus --plugin psplus_example_sm.so ... -smsparse count:///var/tmp/sm-summary.json
 *
 * It keeps no rows: it counts what each commit carried and rewrites the summary file named by
 * the URL's path (atomically: temp file + rename) after every commit, as one JSON object:
 *
 *	{"scheme":"count","writer_id":3,"commits":2,"models":6,"dense_rows":4,
 *	 "sparse_rows":4,"hash_rows":4,"hash_deletes":2,"value_bytes":192,"last_var":"emb"}
 *
 * What it shows a plugin author: the entry point, the ABI checks (host->abi_version and
 * PS_PLUGIN_HOST_HAS before using a member appended after version 1), a writer ops table, error
 * messages through ops.errmsg, and dropping uncommitted writes on close. It uses only the
 * public headers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <psplus/plugin.h>
#include <psplus/streaming_model.h>

struct counts {
	unsigned long long models, dense_rows, sparse_rows, hash_rows, hash_deletes, value_bytes;
};

struct count_writer {
	char path[4096];
	unsigned long long writer_id, commits;
	struct counts done;    /* committed */
	struct counts pending; /* since the last commit */
	char last_var[PS_SM_NAME_MAX + 1];
	char errmsg[4400];
};

static int cw_open(const char *url, const char *rest, const struct ps_sm_writer_opts *opts,
		   void **state, char *err, size_t errlen)
{
	struct count_writer *w;

	if (rest[0] != '/' || strlen(rest) >= sizeof(w->path) - 8) {
		snprintf(err, errlen,
			 "'%s': count:// needs an absolute file path, e.g. "
			 "count:///tmp/summary.json",
			 url);
		return -EINVAL;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	snprintf(w->path, sizeof(w->path), "%s", rest);
	w->writer_id = opts->writer_id;
	*state = w;
	return 0;
}

static void note(struct count_writer *w, const char *name, unsigned long long bytes)
{
	w->pending.models++;
	w->pending.value_bytes += bytes;
	snprintf(w->last_var, sizeof(w->last_var), "%s", name ? name : "");
}

static unsigned long long floats(unsigned long long n, unsigned width, unsigned nslots)
{
	return n * width * (1ull + nslots) * sizeof(float);
}

static int cw_dense(void *state, const struct ps_sm_dense_model *m)
{
	struct count_writer *w = state;

	w->pending.dense_rows += m->nrows;
	note(w, m->var_name, floats(m->nrows, m->width, m->nslots));
	return 0;
}

static int cw_sparse(void *state, const struct ps_sm_sparse_model *m)
{
	struct count_writer *w = state;

	w->pending.sparse_rows += m->n;
	note(w, m->var_name, floats(m->n, m->width, m->nslots));
	return 0;
}

static int cw_hash(void *state, const struct ps_sm_hash_model *m)
{
	struct count_writer *w = state;

	w->pending.hash_rows += m->n;
	w->pending.hash_deletes += m->ndeleted;
	note(w, m->var_name, floats(m->n, m->width, m->nslots));
	return 0;
}

static int cw_commit(void *state)
{
	struct count_writer *w = state;
	struct counts c = w->done;
	char tmp[4200];
	FILE *f;
	int rc = 0;

	c.models += w->pending.models;
	c.dense_rows += w->pending.dense_rows;
	c.sparse_rows += w->pending.sparse_rows;
	c.hash_rows += w->pending.hash_rows;
	c.hash_deletes += w->pending.hash_deletes;
	c.value_bytes += w->pending.value_bytes;
	snprintf(tmp, sizeof(tmp), "%s.tmp", w->path);
	f = fopen(tmp, "w");
	if (!f) {
		rc = -errno;
		snprintf(w->errmsg, sizeof(w->errmsg), "count://%s: cannot write: %s", tmp,
			 strerror(errno));
		return rc;
	}
	fprintf(f,
		"{\"scheme\":\"count\",\"writer_id\":%llu,\"commits\":%llu,\"models\":%llu,"
		"\"dense_rows\":%llu,\"sparse_rows\":%llu,\"hash_rows\":%llu,\"hash_deletes\":%llu,"
		"\"value_bytes\":%llu,\"last_var\":\"",
		w->writer_id, w->commits + 1, c.models, c.dense_rows, c.sparse_rows, c.hash_rows,
		c.hash_deletes, c.value_bytes);
	for (const char *p = w->last_var; *p; p++) { /* JSON-escape the name */
		if (*p == '"' || *p == '\\')
			fputc('\\', f);
		fputc((unsigned char)*p < 0x20 ? '?' : *p, f);
	}
	fprintf(f, "\"}\n");
	if (fflush(f) || fsync(fileno(f)))
		rc = -errno;
	if (fclose(f) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, w->path))
		rc = -errno;
	if (rc) {
		snprintf(w->errmsg, sizeof(w->errmsg), "count://%s: %s", w->path, strerror(-rc));
		unlink(tmp);
		return rc;
	}
	w->done = c;
	w->commits++;
	memset(&w->pending, 0, sizeof(w->pending));
	return 0;
}

static void cw_close(void *state)
{
	free(state); /* pending counts are dropped, as uncommitted writes must be */
}

static const char *cw_errmsg(void *state)
{
	struct count_writer *w = state;

	return w->errmsg[0] ? w->errmsg : NULL;
}

static const struct ps_sm_writer_ops count_ops = {
	.size = sizeof(struct ps_sm_writer_ops),
	.open = cw_open,
	.write_dense = cw_dense,
	.write_sparse = cw_sparse,
	.write_hash = cw_hash,
	.commit = cw_commit,
	.close = cw_close,
	.errmsg = cw_errmsg,
};

PS_EXPORT int psplus_plugin_init(const struct ps_plugin_host *host);

int psplus_plugin_init(const struct ps_plugin_host *host)
{
	if (host->abi_version < 1 || !PS_PLUGIN_HOST_HAS(host, register_model_writer))
		return -ENOTSUP; /* a psplus from before streaming-model plugins */
	return host->register_model_writer("count", &count_ops);
}
