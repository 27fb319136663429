/*
 * Page-aligned, NUMA-placed, optionally huge-page memory; RLIMIT_MEMLOCK handling.
 */
#include <errno.h>
#include <numa.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mem.h"

#define HUGE_2M (2ul << 20)

/* Linux 5.14; older headers lack the name, and older kernels answer EINVAL. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static size_t round_up(size_t v, size_t to)
{
	return (v + to - 1) / to * to;
}

int ps_mem_alloc(size_t len, int numa_node, unsigned flags, struct ps_mem *out)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	int mflags = MAP_PRIVATE | MAP_ANONYMOUS;
	void *p = MAP_FAILED;
	size_t mlen;

	memset(out, 0, sizeof(*out));
	out->numa_node = -1;
	if (!len)
		return -EINVAL;
	if (numa_node >= 0 && numa_available() >= 0 && numa_node > numa_max_node())
		return -EINVAL;
	if (flags & PS_MEM_HUGEPAGES) {
		/* Explicit huge pages exist only when the admin reserved some; try, then fall back. */
		mlen = round_up(len, HUGE_2M);
		p = mmap(NULL, mlen, PROT_READ | PROT_WRITE, mflags | MAP_HUGETLB, -1, 0);
		if (p != MAP_FAILED)
			out->huge = true;
	}
	if (p == MAP_FAILED) {
		mlen = round_up(len, page);
		p = mmap(NULL, mlen, PROT_READ | PROT_WRITE, mflags, -1, 0);
		if (p == MAP_FAILED)
			return -ENOMEM;
		/* Transparent huge pages cut TLB misses on large tables; a hint, so ignore errors. */
		if ((flags & PS_MEM_HUGEPAGES) && mlen >= HUGE_2M)
			(void)madvise(p, mlen, MADV_HUGEPAGE);
	}
	/* Bind before the first touch, so every page is faulted in on the chosen node. */
	if (numa_node >= 0 && numa_available() >= 0) {
		numa_tonode_memory(p, mlen, numa_node);
		out->numa_node = numa_node;
	}
	/* Registered memory is pinned anyway; DONTFORK keeps a fork() from breaking the pinning. */
	(void)madvise(p, mlen, MADV_DONTFORK);
	/* Nobody else sees the memory yet: without MADV_POPULATE_WRITE, write every page. */
	if ((flags & PS_MEM_POPULATE) && ps_mem_populate(p, mlen)) {
		for (size_t off = 0; off < mlen; off += page)
			((volatile char *)p)[off] = 0;
	}
	out->addr = p;
	out->len = mlen;
	return 0;
}

int ps_mem_populate(void *addr, size_t len)
{
	if ((uintptr_t)addr % (size_t)sysconf(_SC_PAGESIZE))
		return -EINVAL;
	if (!len)
		return 0;
	if (!madvise(addr, len, MADV_POPULATE_WRITE))
		return 0;
	/* EINVAL for an aligned range: a kernel before 5.14, which does not know the advice. */
	return errno == EINVAL ? -EOPNOTSUPP : -errno;
}

void ps_mem_free(struct ps_mem *m)
{
	if (m && m->addr) {
		munmap(m->addr, m->len);
		m->addr = NULL;
		m->len = 0;
	}
}

static void fmt_limit(rlim_t v, char *buf, size_t len)
{
	if (v == RLIM_INFINITY)
		snprintf(buf, len, "unlimited");
	else if (v >= (1ull << 20))
		snprintf(buf, len, "%llu MiB", (unsigned long long)(v >> 20));
	else
		snprintf(buf, len, "%llu KiB", (unsigned long long)(v >> 10));
}

void ps_mem_memlock_describe(char *buf, size_t len)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl)) {
		snprintf(buf, len, "unknown");
		return;
	}
	fmt_limit(rl.rlim_cur, buf, len);
}

/*
 * Bytes this process has pinned or locked now: VmPin (pages pinned by RDMA registrations, counted
 * against RLIMIT_MEMLOCK since Linux 3.2) plus VmLck (mlock). Read from the kernel rather than
 * counted here, so deregistered memory is given back and registrations made by any code count.
 */
static size_t pinned_now(void)
{
	char line[256];
	size_t total = 0;
	unsigned long kb;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmPin: %lu kB", &kb) == 1 ||
		    sscanf(line, "VmLck: %lu kB", &kb) == 1)
			total += (size_t)kb << 10;
	}
	fclose(f);
	return total;
}

int ps_mem_memlock_ensure(size_t need, char *err, size_t errlen)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct rlimit rl, want;
	char cur[32], hard[32], needs[32], totals[32];
	size_t total;
	int rc = 0;

	pthread_mutex_lock(&lock);
	total = pinned_now() + need;
	if (getrlimit(RLIMIT_MEMLOCK, &rl)) {
		rc = -errno;
		goto out;
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= total)
		goto out;
	/* Ask for unlimited first (root can), then for as much as the hard limit allows. */
	want.rlim_cur = want.rlim_max = RLIM_INFINITY;
	if (!setrlimit(RLIMIT_MEMLOCK, &want))
		goto out;
	if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= total) {
		want.rlim_cur = rl.rlim_max;
		want.rlim_max = rl.rlim_max;
		if (!setrlimit(RLIMIT_MEMLOCK, &want))
			goto out;
	}
	fmt_limit(rl.rlim_cur, cur, sizeof(cur));
	fmt_limit(rl.rlim_max, hard, sizeof(hard));
	fmt_limit(need, needs, sizeof(needs));
	fmt_limit(total, totals, sizeof(totals));
	snprintf(err, errlen,
		 "registering %s more memory (%s in all) needs RLIMIT_MEMLOCK >= %s, but the "
		 "limit is %s (hard %s) and cannot be raised: run 'ulimit -l unlimited' as root "
		 "before starting, set 'memlock unlimited' in /etc/security/limits.conf, or "
		 "LimitMEMLOCK=infinity in the systemd unit",
		 needs, totals, totals, cur, hard);
	rc = -ENOMEM;
out:
	pthread_mutex_unlock(&lock);
	return rc;
}
