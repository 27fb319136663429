/*
 * CRC32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78), the checksum of iSCSI, ext4,
 * btrfs and every psplus file format (checkpoint parts, metadata, indexes, streaming deltas).
 *
 * Conventions are zlib's crc32(): the value passed in and returned is the finished CRC (the
 * pre- and post-inversion happen inside), so a CRC can be computed in pieces:
 *
 *	c = ps_crc32c(0, a, alen);
 *	c = ps_crc32c(c, b, blen);   == ps_crc32c(0, a||b, alen + blen)
 *
 * The standard check value: ps_crc32c(0, "123456789", 9) == 0xE3069283.
 *
 * Implementation: slicing-by-8 tables (8 KiB, built once, thread-safe), and on x86-64 CPUs with
 * SSE4.2 the crc32 instruction (picked once at first use). Both give identical results; the
 * software path is exported for the tests that check that.
 */
#ifndef PS_COMMON_CRC32C_H
#define PS_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#include <psplus/common.h>

/** ps_crc32c() - extend @crc (0 to start) over @len bytes at @buf. Thread-safe. */
PS_EXPORT uint32_t ps_crc32c(uint32_t crc, const void *buf, size_t len);

/** ps_crc32c_sw() - the same, always with the portable slicing-by-8 tables. Thread-safe. */
PS_EXPORT uint32_t ps_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/** ps_crc32c_impl() - "sse4.2" or "slicing-by-8": what ps_crc32c() uses on this CPU. */
PS_EXPORT const char *ps_crc32c_impl(void);

#endif
