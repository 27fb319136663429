/*
 * Data-plane statistics for heartbeats: the threads' counters (relaxed atomics: a heartbeat
 * wants a recent value, not a consistent cut), the transport's byte counters, and the NIC's own
 * counters read from sysfs - what the placementer compares with the budgets.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/dp_internal.h"

void ps_dp_stats_get(const struct ps_dp *dp, struct ps_dp_stats *out)
{
	struct ps_tp_stats ts;

	memset(out, 0, sizeof(*out));
	for (uint32_t i = 0; i < dp->nthreads; i++) {
		struct dp_thread *t = &dp->threads[i];

		out->requests += atomic_load_explicit(&t->n_requests, memory_order_relaxed);
		out->failed += atomic_load_explicit(&t->n_failed, memory_order_relaxed);
		out->bounced += atomic_load_explicit(&t->n_bounced, memory_order_relaxed);
		out->waits += atomic_load_explicit(&t->n_waits, memory_order_relaxed);
		out->table_bytes += atomic_load_explicit(&t->n_table_bytes, memory_order_relaxed);
		out->conns += atomic_load_explicit(&t->n_conns, memory_order_relaxed);
	}
	ps_tp_stats_get(dp->dev, &ts);
	out->tx_bytes = ts.tx_bytes;
	out->rx_bytes = ts.rx_bytes;
	out->bytes_copied = ts.bytes_copied;
}

/* One counter file: a decimal number (hw_counters may hold a trailing newline). */
static int read_u64(const char *path, uint64_t *v)
{
	char buf[64], *end;
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	errno = 0;
	*v = strtoull(buf, &end, 10);
	if (end == buf || errno || (*end && *end != '\n'))
		return -EINVAL;
	return 0;
}

static int skip_dots(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Every counter file of @dir as "<prefix>/<file>", in name order. */
static int read_dir(const char *dir, const char *prefix, ps_dp_counter_fn fn, void *arg, int *count)
{
	struct dirent **ents;
	char path[768], name[512];
	uint64_t v;
	int n, rc = 0;

	n = scandir(dir, &ents, skip_dots, alphasort);
	if (n < 0)
		return 0; /* no such directory: a device without these counters */
	for (int i = 0; i < n; i++) {
		if (!rc &&
		    snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name) <
			    (int)sizeof(path) &&
		    !read_u64(path, &v) &&
		    snprintf(name, sizeof(name), "%s/%s", prefix, ents[i]->d_name) <
			    (int)sizeof(name)) {
			rc = fn(arg, name, v);
			if (!rc)
				(*count)++;
		}
		free(ents[i]);
	}
	free(ents);
	return rc;
}

int ps_dp_nic_counters(const char *root, const struct ps_tp_dev_info *info, ps_dp_counter_fn fn,
		       void *arg)
{
	static const char *const subdirs[] = {"counters", "hw_counters"};
	static const char *const net[] = {"rx_bytes", "tx_bytes", "rx_packets", "tx_packets"};
	char dir[384], prefix[128], path[512];
	int count = 0, rc;
	uint64_t v;

	if (info->kind != PS_TP_KIND_RDMA)
		return 0;
	if (!root)
		root = "/sys";
	snprintf(prefix, sizeof(prefix), "%s/%u", info->name, info->port);
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(dir, sizeof(dir), "%s/class/infiniband/%s/ports/%u/%s", root, info->name,
			 info->port, subdirs[i]);
		rc = read_dir(dir, prefix, fn, arg, &count);
		if (rc)
			return rc;
	}
	/* Soft devices (rxe) count nothing in hardware: their netdev does. */
	for (size_t i = 0; info->netdev[0] && i < sizeof(net) / sizeof(net[0]); i++) {
		snprintf(path, sizeof(path), "%s/class/net/%s/statistics/%s", root, info->netdev,
			 net[i]);
		if (read_u64(path, &v))
			continue;
		snprintf(prefix, sizeof(prefix), "%s/%s", info->netdev, net[i]);
		rc = fn(arg, prefix, v);
		if (rc)
			return rc;
		count++;
	}
	return count;
}
