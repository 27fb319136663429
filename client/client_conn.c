/*
 * The client's data-plane endpoints, and the per-call scratch memory.
 *
 * Destinations: one per (server, shard), shard t of server s at index servers[s].dest0 + t,
 * each on the dev of the local device its route uses (client_dev.c), rebuilt from every
 * ClusterInfo; a connection survives a rebuild when its endpoint (host, port, shard count) and
 * dev did not change. Connections are made at create and again on first use after a loss.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "client/client_internal.h"
#include "common/clock.h"
#include "common/log.h"

static void *dest_user(uint32_t d)
{
	return (void *)(uintptr_t)(d + 1);
}

static bool same_endpoint(const struct cli_server *a, const struct cli_server *b, uint32_t t)
{
	return a->ports && b->ports && a->nshards == b->nshards && !strcmp(a->host, b->host) &&
	       a->ports[t] == b->ports[t];
}

int cli_dests_rebuild(struct ps_client *c, struct cli_server *sv, uint32_t n)
{
	struct cli_dest *nd;
	uint32_t *dest0, *nsh, *start, *cap, *cstart, total = 0, k = 0;
	uint8_t *mark;

	for (uint32_t i = 0; i < n; i++)
		total += sv[i].nshards ? sv[i].nshards : 1;
	nd = calloc(total, sizeof(*nd));
	dest0 = calloc(n, sizeof(*dest0));
	nsh = calloc(n, sizeof(*nsh));
	start = calloc((size_t)total + 1, sizeof(*start));
	cap = calloc(total, sizeof(*cap));
	mark = calloc(total, 1);
	cstart = calloc((size_t)total + 1, sizeof(*cstart));
	if (!nd || !dest0 || !nsh || !start || !cap || !mark || !cstart) {
		free(cstart);
		free(nd);
		free(dest0);
		free(nsh);
		free(start);
		free(cap);
		free(mark);
		return cli_fail(-ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t T = sv[i].nshards ? sv[i].nshards : 1;
		const struct cli_server *o =
			i < c->server_num && c->servers ? &c->servers[i] : NULL;

		sv[i].dest0 = dest0[i] = k;
		nsh[i] = T;
		for (uint32_t t = 0; t < T; t++, k++) {
			nd[k].server = i;
			nd[k].shard = t;
			nd[k].max_req = sv[i].msg_size;
			if (o && same_endpoint(o, &sv[i], t) && c->dests[o->dest0 + t].conn) {
				nd[k].conn = c->dests[o->dest0 + t].conn;
				c->dests[o->dest0 + t].conn = NULL;
				ps_tp_conn_set_user(nd[k].conn, dest_user(k));
			}
		}
	}
	for (uint32_t d = 0; d < c->ndests; d++)
		ps_tp_conn_close(c->dests[d].conn);
	free(c->dests);
	free(c->dest0);
	free(c->nshards);
	free(c->start);
	free(c->cap);
	free(c->mark);
	free(c->cstart);
	c->cstart = cstart;
	c->dests = nd;
	c->ndests = total;
	c->dest0 = dest0;
	c->nshards = nsh;
	c->start = start;
	c->cap = cap;
	c->mark = mark;
	return 0;
}

void cli_dests_free(struct ps_client *c)
{
	free(c->dests);
	free(c->dest0);
	free(c->nshards);
	free(c->start);
	free(c->cap);
	free(c->mark);
	free(c->cstart);
	c->dests = NULL;
	c->dest0 = c->nshards = c->start = c->cap = c->cstart = NULL;
	c->mark = NULL;
	c->ndests = 0;
}

int cli_dest_connect(struct ps_client *c, uint32_t d, uint64_t deadline)
{
	struct cli_dest *ds = &c->dests[d];
	const struct cli_server *sv = &c->servers[ds->server];
	int rc;

	if (ds->conn)
		return 0;
	if (!sv->ports)
		return cli_fail(PS_EPEER_LOST, "server %u has never been live", ds->server);
	if (!ps_clock_remaining_ms(deadline))
		return cli_fail(PS_ETIMEOUT, "no time left to connect to server %u", ds->server);
	rc = ps_tp_connect(c->devs[ds->dev].loop, sv->host, sv->ports[ds->shard], dest_user(d),
			   &ds->conn);
	if (rc) {
		ds->conn = NULL;
		return cli_fail(rc, "cannot connect to server %u shard %u at %s:%u over %s: %s%s",
				ds->server, ds->shard, sv->host, sv->ports[ds->shard], c->tp_name,
				ps_strerror(rc), sv->live ? "" : " (the server is not live)");
	}
	return 0;
}

int cli_shape_get(struct ps_client *c, const struct cli_var *v, struct cli_shape *sh)
{
	const struct ps_placement_entry *e =
		c->placement ? ps_placement_find(c->placement, v->id) : NULL;

	if (!e)
		return cli_fail(
			PS_EUNKNOWN_VAR,
			"variable '%s' (id %u) is not in the scheduler's placement (was the "
			"scheduler restarted?)",
			v->name, v->id);
	*sh = (struct cli_shape){.e = e,
				 .kind = v->spec.kind,
				 .width = v->spec.width,
				 .nservers = c->server_num,
				 .dest0 = c->dest0,
				 .nshards = c->nshards};
	return 0;
}

void cli_refresh_if_due(struct ps_client *c, uint64_t deadline)
{
	int rc;

	if (!c->refresh_due)
		return;
	c->refresh_due = false;
	rc = cli_ctl_refresh(c, false, deadline);
	if (rc)
		ps_log_info(CLI_LOG, "re-reading the cluster after a lost connection: %s",
			    ps_client_last_error());
}

int cli_scratch_reserve(struct ps_client *c, size_t n, size_t nchunks)
{
	if (n > c->scratch_n) {
		uint32_t *a = realloc(c->dest_of, n * sizeof(*a));
		uint32_t *b = a ? realloc(c->order, n * sizeof(*b)) : NULL;

		if (a)
			c->dest_of = a;
		if (b)
			c->order = b;
		if (!a || !b)
			return cli_fail(-ENOMEM, "out of memory for %zu ids", n);
		c->scratch_n = n;
	}
	if (nchunks > c->chunks_cap) {
		struct cli_chunk *ch = realloc(c->chunks, nchunks * sizeof(*ch));
		uint32_t *co = ch ? realloc(c->corder, nchunks * sizeof(*co)) : NULL;

		if (ch)
			c->chunks = ch;
		if (co)
			c->corder = co;
		if (!ch || !co)
			return cli_fail(-ENOMEM, "out of memory for %zu requests", nchunks);
		c->chunks_cap = nchunks;
	}
	return 0;
}
