/*
 * Registered memory pools (on the tcp backend, which registers like any other): blocks are
 * page-backed, distinct, inside the registration, reused LIFO; bad and double puts are caught;
 * common/mem allocations honour size, alignment and the memlock check.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/mem.h"
#include "transport/tp_pool.h"

static struct ps_tp_dev *dev;

static int setup(void **state)
{
	struct ps_tp_dev_opts o = {.kind = "tcp", .numa_node = -1};

	return ps_tp_dev_open(&o, &dev);
}

static int teardown(void **state)
{
	ps_tp_dev_close(dev);
	return 0;
}

static void test_blocks_distinct_and_registered(void **state)
{
	struct ps_tp_pool_opts o = {.block_size = 100, .nblocks = 16, .numa_node = -1};
	struct ps_tp_mr_info mi;
	struct ps_tp_pool *p;
	void *blk[16];

	assert_int_equal(ps_tp_pool_create(dev, &o, &p), 0);
	assert_int_equal(ps_tp_pool_block_size(p), 128); /* rounded to a cache line */
	assert_int_equal(ps_tp_pool_avail(p), 16);
	ps_tp_mr_query(ps_tp_pool_mr(p), &mi);
	assert_int_equal((uintptr_t)mi.addr % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
	for (int i = 0; i < 16; i++) {
		blk[i] = ps_tp_pool_get(p);
		assert_non_null(blk[i]);
		assert_true((char *)blk[i] >= (char *)mi.addr);
		assert_true((char *)blk[i] + 128 <= (char *)mi.addr + mi.len);
		/* fresh pools hand blocks out front to back */
		assert_ptr_equal(blk[i], (char *)mi.addr + (size_t)i * 128);
		memset(blk[i], i, 128);
	}
	assert_null(ps_tp_pool_get(p));
	assert_int_equal(ps_tp_pool_avail(p), 0);
	for (int i = 0; i < 16; i++)
		assert_int_equal(((unsigned char *)blk[i])[127], i); /* no overlap */
	assert_int_equal(ps_tp_pool_put(p, blk[5]), 0);
	assert_ptr_equal(ps_tp_pool_get(p), blk[5]); /* LIFO: the warm block comes back */
	for (int i = 0; i < 16; i++)
		assert_int_equal(ps_tp_pool_put(p, blk[i]), 0);
	assert_int_equal(ps_tp_pool_avail(p), 16);
	ps_tp_pool_destroy(p);
}

static void test_bad_puts(void **state)
{
	struct ps_tp_pool_opts o = {.block_size = 64, .nblocks = 4, .numa_node = -1};
	struct ps_tp_pool *p;
	char outside[64];
	char *b;

	assert_int_equal(ps_tp_pool_create(dev, &o, &p), 0);
	b = ps_tp_pool_get(p);
	assert_int_equal(ps_tp_pool_put(p, b + 1), -EINVAL);	  /* not a block start */
	assert_int_equal(ps_tp_pool_put(p, outside), -EINVAL);	  /* not in the pool */
	assert_int_equal(ps_tp_pool_put(p, b + 64 * 4), -EINVAL); /* one past the end */
	assert_int_equal(ps_tp_pool_put(p, b), 0);
	assert_int_equal(ps_tp_pool_put(p, b), -EALREADY); /* double put */
	assert_int_equal(ps_tp_pool_avail(p), 4);
	ps_tp_pool_destroy(p);
}

static void test_bad_opts(void **state)
{
	struct ps_tp_pool_opts o = {.block_size = 0, .nblocks = 4, .numa_node = -1};
	struct ps_tp_pool *p = NULL;

	assert_int_equal(ps_tp_pool_create(dev, &o, &p), -EINVAL);
	o.block_size = 64;
	o.nblocks = 0;
	assert_int_equal(ps_tp_pool_create(dev, &o, &p), -EINVAL);
	o.nblocks = 4;
	o.block_size = SIZE_MAX / 2;
	assert_int_equal(ps_tp_pool_create(dev, &o, &p), -EINVAL); /* overflow */
	assert_int_equal(ps_tp_pool_create(NULL, &o, &p), -EINVAL);
	assert_null(p);
}

static void test_mem_alloc(void **state)
{
	struct ps_mem m;

	assert_int_equal(ps_mem_alloc(0, -1, 0, &m), -EINVAL);
	assert_int_equal(ps_mem_alloc(5000, -1, PS_MEM_POPULATE, &m), 0);
	assert_int_equal(m.len % (size_t)sysconf(_SC_PAGESIZE), 0);
	assert_true(m.len >= 5000);
	assert_int_equal(((char *)m.addr)[4999], 0); /* zero-filled */
	ps_mem_free(&m);
	assert_null(m.addr);
	ps_mem_free(&m); /* idempotent */
	assert_int_equal(ps_mem_alloc(3u << 20, -1, PS_MEM_HUGEPAGES, &m), 0);
	assert_true(m.len >= 3u << 20);
	ps_mem_free(&m);
	assert_int_equal(ps_mem_alloc(4096, 100000, 0, &m), -EINVAL); /* no such node */
}

static void test_memlock_message(void **state)
{
	char err[512] = "";
	char desc[32];

	ps_mem_memlock_describe(desc, sizeof(desc));
	assert_true(desc[0] != '\0');
	/* Small requests always fit (as root the limit is raised to unlimited). */
	assert_int_equal(ps_mem_memlock_ensure(4096, err, sizeof(err)), 0);
}

/* In a child without CAP_SYS_RESOURCE and a 64 KiB hard limit, a 1 MiB request must fail with a
 * message that gives the numbers and the fix. */
static void test_memlock_refused(void **state)
{
	int st;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
		struct __user_cap_data_struct d[2];
		struct rlimit rl = {64 << 10, 64 << 10};
		char err[512] = "";

		if (syscall(SYS_capget, &h, d))
			_exit(10);
		d[0].effective &= ~(1u << CAP_SYS_RESOURCE);
		d[0].permitted &= ~(1u << CAP_SYS_RESOURCE);
		if (syscall(SYS_capset, &h, d) || setrlimit(RLIMIT_MEMLOCK, &rl))
			_exit(11);
		if (ps_mem_memlock_ensure(1 << 20, err, sizeof(err)) != -ENOMEM)
			_exit(12);
		if (!strstr(err, "registering 1 MiB more") || !strstr(err, "64 KiB") ||
		    !strstr(err, "ulimit -l"))
			_exit(13);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_blocks_distinct_and_registered),
		cmocka_unit_test(test_bad_puts),
		cmocka_unit_test(test_bad_opts),
		cmocka_unit_test(test_mem_alloc),
		cmocka_unit_test(test_memlock_message),
		cmocka_unit_test(test_memlock_refused),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
