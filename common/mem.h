/*
 * Large, page-aligned memory for registration: server table memory, registered pools and
 * receive buffers. Registered memory must never move, so it comes from mmap() (never from
 * malloc, whose blocks may share pages with unrelated data that fork() or madvise() would then
 * disturb), is page-aligned, optionally backed by huge pages, and placed on a NUMA node.
 *
 * Also RLIMIT_MEMLOCK: registering memory pins it, and an unprivileged process is allowed only
 * a little (often 8 MiB). ps_mem_memlock_ensure() raises the limit where allowed and otherwise
 * says exactly what is missing.
 */
#ifndef PS_COMMON_MEM_H
#define PS_COMMON_MEM_H

#include <stdbool.h>
#include <stddef.h>

#include <psplus/common.h>

enum ps_mem_flags {
	PS_MEM_HUGEPAGES = 1 << 0, /* try explicit 2 MiB pages, then transparent ones */
	PS_MEM_POPULATE = 1 << 1,  /* fault every page in now (off the hot path) */
};

struct ps_mem {
	void *addr;
	size_t len;    /* rounded up to the page size used */
	bool huge;     /* backed by explicit huge pages (MAP_HUGETLB) */
	int numa_node; /* the node it is bound to, -1 if none */
};

/**
 * ps_mem_alloc() - map @len bytes (rounded up to pages), zero-filled.
 * @numa_node: bind the pages to this node (libnuma), or -1 for no binding. A node that does not
 *             exist is -EINVAL; a machine without NUMA support ignores the request and reports
 *             numa_node -1.
 * @flags: PS_MEM_* bits.
 *
 * Returns 0 or -ENOMEM / -EINVAL. Thread-safe.
 */
PS_EXPORT int ps_mem_alloc(size_t len, int numa_node, unsigned flags, struct ps_mem *out);

/**
 * ps_mem_populate() - fault in the pages of [@addr, @addr + @len) writable now, without
 * changing what they hold: one madvise(MADV_POPULATE_WRITE) (Linux 5.14), which costs the
 * kernel's page allocation and zeroing but not a page fault per page. Safe while other threads
 * read and write the same pages, so it may run ahead of a loader that fills them.
 *
 * Returns 0, -EINVAL when @addr is not page-aligned, -EOPNOTSUPP when the kernel has no
 * MADV_POPULATE_WRITE (the pages are then faulted in by their first write, as usual), or
 * -ENOMEM / -EFAULT. Thread-safe.
 */
PS_EXPORT int ps_mem_populate(void *addr, size_t len);

/** ps_mem_free() - unmap what ps_mem_alloc() gave; a zeroed struct is accepted. */
PS_EXPORT void ps_mem_free(struct ps_mem *m);

/**
 * ps_mem_memlock_ensure() - make sure @need more bytes may be locked (pinned), on top of what
 * the process has pinned now (VmPin + VmLck of /proc/self/status: deregistered memory counts no
 * more).
 *
 * Raises the soft RLIMIT_MEMLOCK (and the hard one when privileged) if it is too low. Returns
 * 0, or -ENOMEM with @err telling the current limits, the amount needed and how to allow it.
 */
PS_EXPORT int ps_mem_memlock_ensure(size_t need, char *err, size_t errlen);

/** ps_mem_memlock_describe() - "unlimited" or "64 MiB" (soft limit) for start-up logs. */
PS_EXPORT void ps_mem_memlock_describe(char *buf, size_t len);

#endif
