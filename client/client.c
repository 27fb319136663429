/*
 * The client: create and destroy, options, registered buffers, errors, statistics.
 *
 * ps_client_create() in order: check the options, load the token, find the scheduler through
 * the kv entry and connect, read ClusterInfo until every server is live, open the transport
 * and connect to every data-path thread of every server. Each step is bounded by the one
 * deadline of opts->timeout_ms; a failure undoes everything before it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "client/client_internal.h"
#include "common/clock.h"
#include "common/log.h"

/* The message of this thread's last failed call. */
static __thread char last_error[1024];

int cli_fail(int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return rc;
}

const char *ps_client_last_error(void)
{
	return last_error;
}

struct ps_client_opts ps_client_opts_default(void)
{
	return (struct ps_client_opts){.kv_path = NULL,
				       .transport = "auto",
				       .worker_id = 0,
				       .num_workers = 1,
				       .sync_mode = PS_SYNC_ASYNC,
				       .staleness = 0,
				       .timeout_ms = CLI_DEF_TIMEOUT_MS,
				       .max_inflight = CLI_DEF_INFLIGHT,
				       .auth_token_file = NULL,
				       .pull_dedupe = PS_PULL_DEDUPE_AUTO};
}

static int check_opts(const struct ps_client_opts *o)
{
	const char *t = o->transport ? o->transport : "auto";

	if (!o->kv_path || !o->kv_path[0])
		return cli_fail(-EINVAL, "client options: kv_path is required");
	if (strlen(o->kv_path) >= sizeof(((struct ps_client *)0)->kv_path))
		return cli_fail(-EINVAL, "client options: kv_path is too long");
	if (strcmp(t, "auto") && strcmp(t, "tcp") && strcmp(t, "rdma"))
		return cli_fail(-EINVAL,
				"client options: transport '%s' (expected auto, tcp or "
				"rdma)",
				t);
	if (!o->num_workers || o->worker_id >= o->num_workers)
		return cli_fail(-EINVAL,
				"client options: worker_id %u with num_workers %u (need "
				"num_workers >= 1 and worker_id < num_workers)",
				o->worker_id, o->num_workers);
	if ((unsigned)o->sync_mode > PS_SYNC_SYNC)
		return cli_fail(-EINVAL, "client options: unknown sync_mode %u",
				(unsigned)o->sync_mode);
	if ((unsigned)o->pull_dedupe > PS_PULL_DEDUPE_NEVER)
		return cli_fail(-EINVAL,
				"client options: pull_dedupe %d (0 auto, 1 always, 2 never)",
				(int)o->pull_dedupe);
	if (o->max_inflight > CLI_MAX_INFLIGHT)
		return cli_fail(-EINVAL, "client options: max_inflight %u (at most %u)",
				o->max_inflight, CLI_MAX_INFLIGHT);
	return 0;
}

void ps_client_destroy(struct ps_client *c)
{
	struct ps_client_buf *b, *next;

	if (!c)
		return;
	/* Registrations the caller did not undo go before the dev; their memory stays theirs. */
	for (b = c->bufs; b; b = next) {
		next = b->next;
		cli_buf_dereg(c, b);
		free(b);
	}
	c->bufs = NULL;
	cli_conn_close_all(c);
	cli_dests_free(c);
	cli_ctl_close(c);
	ps_placement_destroy(c->placement);
	for (uint32_t i = 0; c->servers && i < c->server_num; i++)
		free(c->servers[i].ports);
	free(c->servers);
	free(c->vars);
	free(c->dest_of);
	free(c->order);
	free(c->start);
	free(c->cap);
	free(c->mark);
	free(c->chunks);
	free(c->corder);
	free(c->retry_pos);
	cli_dedupe_free(&c->dd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

int ps_client_create(const struct ps_client_opts *opts, struct ps_client **out)
{
	struct ps_client *c;
	uint64_t deadline;
	char err[600];
	int rc;

	if (!opts || !out)
		return cli_fail(-EINVAL, "ps_client_create: NULL argument");
	*out = NULL;
	rc = check_opts(opts);
	if (rc)
		return rc;
	c = calloc(1, sizeof(*c));
	if (!c)
		return cli_fail(-ENOMEM, "out of memory");
	c->o = *opts;
	snprintf(c->kv_path, sizeof(c->kv_path), "%s", opts->kv_path);
	c->o.kv_path = c->kv_path;
	c->o.auth_token_file = NULL; /* borrowed: read now, not kept */
	if (!c->o.transport)
		c->o.transport = "auto";
	else if (!strcmp(opts->transport, "tcp"))
		c->o.transport = "tcp";
	else if (!strcmp(opts->transport, "rdma"))
		c->o.transport = "rdma";
	else
		c->o.transport = "auto";
	if (!c->o.timeout_ms)
		c->o.timeout_ms = CLI_DEF_TIMEOUT_MS;
	if (!c->o.max_inflight)
		c->o.max_inflight = CLI_DEF_INFLIGHT;
	c->ctl_fd = -1;
	c->epfd = -1;
	pthread_mutex_init(&c->lock, NULL);
	deadline = ps_clock_deadline_ms(c->o.timeout_ms);
	if (opts->auth_token_file) {
		rc = ps_ctl_token_load(opts->auth_token_file, c->token, &c->token_len, err,
				       sizeof(err));
		if (rc) {
			cli_fail(rc, "%s", err);
			goto fail;
		}
		c->auth = true;
	}
	rc = cli_ctl_connect(c, deadline);
	if (!rc)
		rc = cli_ctl_refresh(c, true, deadline);
	if (!rc)
		rc = cli_conn_open(c, deadline);
	if (rc)
		goto fail;
	for (uint32_t d = 0; d < c->ndests; d++) {
		rc = cli_dest_connect(c, d, deadline);
		if (rc)
			goto fail;
	}
	ps_log_info(CLI_LOG,
		    "worker %u of %u connected: scheduler %s, %u servers, %u data-path "
		    "endpoints over %s (%u local device%s)",
		    c->o.worker_id, c->o.num_workers, c->sched_addr, c->server_num, c->ndests,
		    c->tp_name, c->ndevs, c->ndevs == 1 ? "" : "s");
	*out = c;
	return 0;
fail:
	ps_client_destroy(c);
	return rc;
}

/* ---- registered buffers ------------------------------------------------------------------- */

const struct ps_client_buf *cli_buf_find(const struct ps_client *c, const void *p, size_t len)
{
	const uint8_t *a = p;

	for (const struct ps_client_buf *b = c->bufs; b; b = b->next)
		if (a >= b->addr && len <= b->len && (size_t)(a - b->addr) <= b->len - len)
			return b;
	return NULL;
}

int ps_client_register_buffer(struct ps_client *c, void *addr, size_t len,
			      struct ps_client_buf **out)
{
	struct ps_client_buf *b;
	int rc;

	if (!c || !addr || !len || !out)
		return cli_fail(-EINVAL, "register_buffer: NULL address or handle, or empty range");
	b = calloc(1, sizeof(*b));
	if (!b)
		return cli_fail(-ENOMEM, "out of memory");
	b->c = c;
	b->addr = addr;
	b->len = len;
	pthread_mutex_lock(&c->lock);
	rc = cli_buf_reg(c, b);
	if (!rc) {
		b->next = c->bufs;
		c->bufs = b;
	}
	pthread_mutex_unlock(&c->lock);
	if (rc) {
		free(b);
		return cli_fail(rc, "register_buffer: registering %zu bytes at %p: %s", len, addr,
				ps_strerror(rc));
	}
	*out = b;
	return 0;
}

void ps_client_unregister_buffer(struct ps_client_buf *b)
{
	struct ps_client *c;
	struct ps_client_buf **pp;

	if (!b)
		return;
	c = b->c;
	pthread_mutex_lock(&c->lock);
	for (pp = &c->bufs; *pp && *pp != b; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = b->next;
	cli_buf_dereg(c, b);
	pthread_mutex_unlock(&c->lock);
	free(b);
}

/* ---- variables and statistics -------------------------------------------------------------- */

struct cli_var *cli_var_find(struct ps_client *c, uint32_t id)
{
	for (uint32_t i = 0; i < c->nvars; i++)
		if (c->vars[i].id == id)
			return &c->vars[i];
	return NULL;
}

void ps_client_stats_get(struct ps_client *c, struct ps_client_stats *out)
{
	if (!c || !out)
		return;
	pthread_mutex_lock(&c->lock);
	*out = c->st;
	out->transport_copied = cli_tp_copied(c);
	snprintf(out->transport, sizeof(out->transport), "%s", c->tp_name);
	pthread_mutex_unlock(&c->lock);
}
