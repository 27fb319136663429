/*
 * cpu_bind: which CPUs a server's data-path threads run on (--bind_cores, mission section 6).
 *
 * The plan is a pure function of three inputs: the NUMA node of the RDMA device (or -1 when
 * it has none: TCP, a virtual device, a single-node machine), the CPUs of each node (libnuma)
 * and the CPUs the process may use (its affinity mask, as set by taskset, cgroups or a
 * scheduler). Threads get the allowed CPUs of the device's node, one each, in CPU order; when
 * there are more threads than such CPUs they share them round-robin (said in the plan). A
 * node with no allowed CPU, or no node at all, falls back to every allowed CPU, and the plan
 * says why, so the log tells an operator what happened instead of silently doing nothing.
 */
#ifndef PS_COMMON_CPU_BIND_H
#define PS_COMMON_CPU_BIND_H

#include <pthread.h>
#include <stddef.h>

/* A plan: CPU of thread i = cpus[i % ncpus]. */
struct ps_cpu_plan {
	int node;	/* the node whose CPUs are used, -1 if all allowed CPUs are */
	unsigned ncpus; /* entries of cpus (>= 1) */
	int *cpus;	/* allowed CPUs used, ascending */
	char why[160];	/* one line for the log: what was chosen and, on a fallback, why */
};

/**
 * ps_cpu_plan_make() - plan for threads near @node (-1: no device node known).
 * @allowed, @nallowed: the CPUs the process may use, ascending (see ps_cpu_allowed()).
 * @node_cpus, @nnode: the CPUs of @node, ascending (ignored when @node < 0).
 * Returns 0, -EINVAL (no allowed CPU, or a NULL array with a count), -ENOMEM.
 * Free with ps_cpu_plan_free().
 */
int ps_cpu_plan_make(int node, const int *allowed, unsigned nallowed, const int *node_cpus,
		     unsigned nnode, struct ps_cpu_plan *out);

/** ps_cpu_plan_free() - release a plan's memory; safe on a zeroed plan. */
void ps_cpu_plan_free(struct ps_cpu_plan *plan);

/**
 * ps_cpu_allowed() - the CPUs this process may run on (sched_getaffinity), ascending, in a new
 * array stored in *@out (free() it). Returns the count (> 0) or a negative errno.
 */
int ps_cpu_allowed(int **out);

/**
 * ps_cpu_node_cpus() - the CPUs of NUMA node @node (libnuma), ascending, in a new array (free()
 * it). Returns the count (>= 0), -ENODEV when the machine has no NUMA support or no such node.
 */
int ps_cpu_node_cpus(int node, int **out);

/**
 * ps_cpu_plan_for_node() - ps_cpu_plan_make() with this machine's allowed CPUs and @node's
 * CPUs (a node libnuma does not know counts as none, and the plan says so).
 */
int ps_cpu_plan_for_node(int node, struct ps_cpu_plan *out);

/** ps_cpu_bind() - pin @thread to @cpu: 0 or a negative errno (-EINVAL for a CPU not allowed). */
int ps_cpu_bind(pthread_t thread, int cpu);

#endif
