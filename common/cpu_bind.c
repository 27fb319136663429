/*
 * cpu_bind: the plan (pure) and the machine's side of it (sched_getaffinity, libnuma,
 * pthread_setaffinity_np). See cpu_bind.h.
 */
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <numa.h>

#include "common/cpu_bind.h"

/* Append "a-b" or "a" runs of @cpus to @buf (bounded): "0-3,8". */
static void runs_fmt(char *buf, size_t len, const int *cpus, unsigned n)
{
	size_t used = strlen(buf);

	for (unsigned i = 0; i < n && used < len; i++) {
		unsigned j = i;

		while (j + 1 < n && cpus[j + 1] == cpus[j] + 1)
			j++;
		used += (size_t)snprintf(buf + used, len - used, "%s%d", i ? "," : "", cpus[i]);
		if (j > i && used < len)
			used += (size_t)snprintf(buf + used, len - used, "-%d", cpus[j]);
		i = j;
	}
}

int ps_cpu_plan_make(int node, const int *allowed, unsigned nallowed, const int *node_cpus,
		     unsigned nnode, struct ps_cpu_plan *out)
{
	unsigned n = 0;

	memset(out, 0, sizeof(*out));
	out->node = -1;
	if (!nallowed || !allowed || (nnode && !node_cpus))
		return -EINVAL;
	out->cpus = calloc(nallowed, sizeof(*out->cpus));
	if (!out->cpus)
		return -ENOMEM;
	/* The allowed CPUs of the node: both lists ascending, one merge. */
	for (unsigned i = 0, k = 0; node >= 0 && i < nallowed && k < nnode;) {
		if (allowed[i] == node_cpus[k]) {
			out->cpus[n++] = allowed[i];
			i++;
			k++;
		} else if (allowed[i] < node_cpus[k]) {
			i++;
		} else {
			k++;
		}
	}
	if (n) {
		out->node = node;
		out->ncpus = n;
		snprintf(out->why, sizeof(out->why), "the device's NUMA node %d: CPUs ", node);
	} else {
		memcpy(out->cpus, allowed, nallowed * sizeof(*allowed));
		out->ncpus = nallowed;
		if (node < 0)
			snprintf(out->why, sizeof(out->why),
				 "no NUMA node for the device (TCP, virtual device or one node): "
				 "all allowed CPUs ");
		else
			snprintf(out->why, sizeof(out->why),
				 "node %d has no CPU this process may use: all allowed CPUs ",
				 node);
	}
	runs_fmt(out->why, sizeof(out->why), out->cpus, out->ncpus);
	return 0;
}

void ps_cpu_plan_free(struct ps_cpu_plan *plan)
{
	free(plan->cpus);
	plan->cpus = NULL;
	plan->ncpus = 0;
}

int ps_cpu_allowed(int **out)
{
	cpu_set_t set;
	int *cpus, n = 0, cnt;

	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof(set), &set))
		return -errno;
	cnt = CPU_COUNT(&set);
	if (cnt <= 0)
		return -ENODEV;
	cpus = calloc((size_t)cnt, sizeof(*cpus));
	if (!cpus)
		return -ENOMEM;
	for (int c = 0; c < CPU_SETSIZE && n < cnt; c++)
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	*out = cpus;
	return n;
}

int ps_cpu_node_cpus(int node, int **out)
{
	struct bitmask *bm;
	int *cpus = NULL, n = 0, max;

	if (node < 0 || numa_available() < 0 || node > numa_max_node())
		return -ENODEV;
	bm = numa_allocate_cpumask();
	if (!bm)
		return -ENOMEM;
	if (numa_node_to_cpus(node, bm)) {
		numa_free_cpumask(bm);
		return -ENODEV;
	}
	max = (int)numa_bitmask_nbytes(bm) * 8;
	cpus = calloc((size_t)max, sizeof(*cpus));
	if (!cpus) {
		numa_free_cpumask(bm);
		return -ENOMEM;
	}
	for (int c = 0; c < max; c++)
		if (numa_bitmask_isbitset(bm, (unsigned)c))
			cpus[n++] = c;
	numa_free_cpumask(bm);
	*out = cpus;
	return n;
}

int ps_cpu_plan_for_node(int node, struct ps_cpu_plan *out)
{
	int *allowed = NULL, *ncpus = NULL, na, nn = 0, rc;

	memset(out, 0, sizeof(*out));
	out->node = -1;
	na = ps_cpu_allowed(&allowed);
	if (na < 0)
		return na;
	if (node >= 0) {
		nn = ps_cpu_node_cpus(node, &ncpus);
		if (nn < 0)
			nn = 0; /* unknown node: the plan falls back and says so */
	}
	rc = ps_cpu_plan_make(node, allowed, (unsigned)na, ncpus, (unsigned)nn, out);
	free(allowed);
	free(ncpus);
	return rc;
}

int ps_cpu_bind(pthread_t thread, int cpu)
{
	cpu_set_t set;

	if (cpu < 0 || cpu >= CPU_SETSIZE)
		return -EINVAL;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return -pthread_setaffinity_np(thread, sizeof(set), &set);
}
