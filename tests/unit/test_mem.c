/*
 * common/mem.c: mapped memory is page-aligned and zeroed, PS_MEM_POPULATE leaves it resident,
 * and ps_mem_populate() faults pages in without changing what they hold, also while another
 * thread writes to them (the restore's prefault helper runs ahead of its loader).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/mem.h"

#define LEN (8u << 20)

/* Pages of [p, p + len) in memory now. */
static size_t resident_pages(void *p, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), n = 0;
	unsigned char vec[LEN / 4096];

	assert_true(len / page <= sizeof(vec));
	assert_int_equal(mincore(p, len, vec), 0);
	for (size_t i = 0; i < len / page; i++)
		n += vec[i] & 1;
	return n;
}

static void test_alloc_zeroed_and_aligned(void **state)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct ps_mem m;

	assert_int_equal(ps_mem_alloc(LEN - 100, -1, 0, &m), 0);
	assert_int_equal((uintptr_t)m.addr % page, 0);
	assert_int_equal(m.len, LEN);
	for (size_t i = 0; i < m.len; i += 4093)
		assert_int_equal(((unsigned char *)m.addr)[i], 0);
	ps_mem_free(&m);
	assert_null(m.addr);
	ps_mem_free(&m);
	assert_int_equal(ps_mem_alloc(0, -1, 0, &m), -EINVAL);
}

static void test_populate_flag(void **state)
{
	struct ps_mem m;

	assert_int_equal(ps_mem_alloc(LEN, -1, PS_MEM_POPULATE, &m), 0);
	assert_int_equal(resident_pages(m.addr, m.len), m.len / (size_t)sysconf(_SC_PAGESIZE));
	assert_int_equal(((unsigned char *)m.addr)[LEN - 1], 0);
	ps_mem_free(&m);
}

static void test_populate_keeps_contents(void **state)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	unsigned char *p;
	struct ps_mem m;
	int rc;

	assert_int_equal(ps_mem_alloc(LEN, -1, 0, &m), 0);
	p = m.addr;
	for (size_t i = 0; i < LEN / 2; i += page)
		p[i + 7] = (unsigned char)(i / page + 1);
	rc = ps_mem_populate(m.addr, m.len);
	if (rc == -EOPNOTSUPP) {
		printf("MADV_POPULATE_WRITE not supported by this kernel: fallback only\n");
	} else {
		assert_int_equal(rc, 0);
		assert_int_equal(resident_pages(m.addr, m.len), LEN / page);
	}
	for (size_t i = 0; i < LEN / 2; i += page)
		assert_int_equal(p[i + 7], (unsigned char)(i / page + 1));
	for (size_t i = LEN / 2; i < LEN; i += 511)
		assert_int_equal(p[i], 0);
	assert_int_equal(ps_mem_populate(m.addr, 0), 0);
	/* Unaligned: refused, never a partial write. */
	assert_int_equal(ps_mem_populate(p + 1, page), -EINVAL);
	ps_mem_free(&m);
}

struct writer {
	unsigned char *p;
	size_t len;
};

static void *write_all(void *arg)
{
	struct writer *w = arg;

	for (size_t i = 0; i < w->len; i += 64)
		memset(w->p + i, (int)(i / 64 % 251) + 1, 64);
	return NULL;
}

static void test_populate_beside_a_writer(void **state)
{
	struct writer w;
	struct ps_mem m;
	pthread_t t;

	for (int round = 0; round < 4; round++) {
		assert_int_equal(ps_mem_alloc(LEN, -1, 0, &m), 0);
		w.p = m.addr;
		w.len = m.len;
		assert_int_equal(pthread_create(&t, NULL, write_all, &w), 0);
		for (size_t off = 0; off < m.len; off += 1u << 20) {
			int rc = ps_mem_populate(w.p + off, 1u << 20);

			assert_true(rc == 0 || rc == -EOPNOTSUPP);
		}
		assert_int_equal(pthread_join(t, NULL), 0);
		for (size_t i = 0; i < m.len; i += 64)
			assert_int_equal(w.p[i + 63], (unsigned char)(i / 64 % 251 + 1));
		ps_mem_free(&m);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_zeroed_and_aligned),
		cmocka_unit_test(test_populate_flag),
		cmocka_unit_test(test_populate_keeps_contents),
		cmocka_unit_test(test_populate_beside_a_writer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
