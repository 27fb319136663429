/*
 * common/cpu_bind.c: the --bind_cores plan (a pure function of the device's node, the node's
 * CPUs and the allowed CPUs) and the binding of a real thread.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/cpu_bind.h"

/* The device's node has allowed CPUs: those, in order, and the log line names them. */
static void test_plan_node(void **state)
{
	const int allowed[] = {0, 1, 2, 3, 8, 9, 10, 11};
	const int node1[] = {8, 9, 10, 11, 12, 13};
	struct ps_cpu_plan p;

	assert_int_equal(ps_cpu_plan_make(1, allowed, 8, node1, 6, &p), 0);
	assert_int_equal(p.node, 1);
	assert_int_equal(p.ncpus, 4);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(p.cpus[i], 8 + (int)i);
	assert_non_null(strstr(p.why, "node 1"));
	assert_non_null(strstr(p.why, "8-11"));
	ps_cpu_plan_free(&p);
}

/* Only part of the node is allowed (taskset, cgroup): the intersection, runs printed apart. */
static void test_plan_intersection(void **state)
{
	const int allowed[] = {1, 3, 4, 5, 7};
	const int node0[] = {0, 1, 2, 3, 4, 5};
	struct ps_cpu_plan p;

	assert_int_equal(ps_cpu_plan_make(0, allowed, 5, node0, 6, &p), 0);
	assert_int_equal(p.node, 0);
	assert_int_equal(p.ncpus, 4);
	assert_int_equal(p.cpus[0], 1);
	assert_int_equal(p.cpus[1], 3);
	assert_int_equal(p.cpus[2], 4);
	assert_int_equal(p.cpus[3], 5);
	assert_non_null(strstr(p.why, "CPUs 1,3-5"));
	ps_cpu_plan_free(&p);
}

/* No node (-1) or a node with no allowed CPU: every allowed CPU, and the reason is given. */
static void test_plan_fallbacks(void **state)
{
	const int allowed[] = {0, 1};
	const int node1[] = {2, 3};
	struct ps_cpu_plan p;

	assert_int_equal(ps_cpu_plan_make(-1, allowed, 2, NULL, 0, &p), 0);
	assert_int_equal(p.node, -1);
	assert_int_equal(p.ncpus, 2);
	assert_non_null(strstr(p.why, "no NUMA node"));
	assert_non_null(strstr(p.why, "0-1"));
	ps_cpu_plan_free(&p);

	assert_int_equal(ps_cpu_plan_make(1, allowed, 2, node1, 2, &p), 0);
	assert_int_equal(p.node, -1);
	assert_int_equal(p.ncpus, 2);
	assert_non_null(strstr(p.why, "node 1 has no CPU"));
	ps_cpu_plan_free(&p);
}

static void test_plan_bad_input(void **state)
{
	const int one[] = {0};
	struct ps_cpu_plan p;

	assert_int_equal(ps_cpu_plan_make(0, one, 0, one, 1, &p), -EINVAL);
	assert_int_equal(ps_cpu_plan_make(0, NULL, 1, one, 1, &p), -EINVAL);
	assert_int_equal(ps_cpu_plan_make(0, one, 1, NULL, 1, &p), -EINVAL);
	ps_cpu_plan_free(&p); /* zeroed by the failed make: safe */
}

/* This machine: a plan exists for no node and for node 0 / an unknown node; binding works. */
static void test_machine(void **state)
{
	struct ps_cpu_plan p;
	cpu_set_t set, saved;
	int *allowed = NULL, n;

	n = ps_cpu_allowed(&allowed);
	assert_true(n > 0);
	assert_int_equal(ps_cpu_plan_for_node(-1, &p), 0);
	assert_int_equal(p.ncpus, (unsigned)n);
	ps_cpu_plan_free(&p);
	assert_int_equal(ps_cpu_plan_for_node(4096, &p), 0); /* no such node: falls back */
	assert_int_equal(p.node, -1);
	assert_non_null(strstr(p.why, "node 4096 has no CPU"));
	ps_cpu_plan_free(&p);

	assert_int_equal(pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved), 0);
	assert_int_equal(ps_cpu_bind(pthread_self(), allowed[n - 1]), 0);
	assert_int_equal(pthread_getaffinity_np(pthread_self(), sizeof(set), &set), 0);
	assert_int_equal(CPU_COUNT(&set), 1);
	assert_true(CPU_ISSET(allowed[n - 1], &set));
	assert_int_equal(ps_cpu_bind(pthread_self(), -1), -EINVAL);
	assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved), 0);
	free(allowed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan_node),      cmocka_unit_test(test_plan_intersection),
		cmocka_unit_test(test_plan_fallbacks), cmocka_unit_test(test_plan_bad_input),
		cmocka_unit_test(test_machine),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
