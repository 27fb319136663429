/*
 * CRC32C: slicing-by-8 (Intel's "Slicing-by-8" paper, as in the Linux and Kafka software paths)
 * and the SSE4.2 crc32 instruction where the CPU has it.
 *
 * Slicing-by-8 reads 8 bytes per step and looks up 8 tables; it runs at about 1-2 bytes per
 * cycle. The crc32q instruction does 8 bytes per 3 cycles of latency, and 8 per cycle when three
 * independent chains are interleaved (crc32c_hw): a checkpoint save checksums every byte it
 * writes and a restore every byte it reads, and on a machine with few CPUs the checksum's CPU
 * time is taken from the copying and page-faulting that run beside it.
 */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "common/crc32c.h"

#define POLY UINT32_C(0x82f63b78)

static uint32_t tab[8][256];
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;

static void tab_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
		tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			tab[t][i] = (tab[t - 1][i] >> 8) ^ tab[0][tab[t - 1][i] & 0xff];
}

static uint32_t load_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t ps_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = ~crc;

	pthread_once(&tab_once, tab_init);
	/* Byte at a time up to 8-byte alignment, so the 8-byte loop reads aligned words. */
	while (len && ((uintptr_t)p & 7)) {
		c = tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
		len--;
	}
	while (len >= 8) {
		uint32_t lo = load_le32(p) ^ c, hi = load_le32(p + 4);

		c = tab[7][lo & 0xff] ^ tab[6][(lo >> 8) & 0xff] ^ tab[5][(lo >> 16) & 0xff] ^
		    tab[4][lo >> 24] ^ tab[3][hi & 0xff] ^ tab[2][(hi >> 8) & 0xff] ^
		    tab[1][(hi >> 16) & 0xff] ^ tab[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

#if defined(__x86_64__)
/*
 * The crc32 instruction has a latency of 3 cycles but issues one per cycle, so one dependent
 * chain runs at a third of its speed. Long buffers are therefore cut into blocks of three
 * equal pieces, checksummed as three independent chains (the second and third from a zero
 * register), and joined: the register after A||B||C is Z(Z(a) ^ b) ^ c, where a, b, c are the
 * three chains' registers and Z feeds a piece's length of zero bytes through the register.
 * Z is linear over GF(2) (the register update is), so it is four lookups into tables built
 * once from Z of the 32 single-bit registers. Same result as the one-chain loop, bit for bit.
 */
#define HW_LONG	 8192u /* bytes per chain in a long block (24 KiB blocks) */
#define HW_SHORT 256u  /* ... in a short block (768 B blocks), for what is left */

static uint32_t z_long[4][256], z_short[4][256];
static pthread_once_t z_once = PTHREAD_ONCE_INIT;

/* The register after @n zero bytes (n a multiple of 8): the slow way, for the tables. */
__attribute__((target("sse4.2"))) static uint32_t zeros_slow(uint32_t reg, size_t n)
{
	uint64_t c = reg;

	for (size_t i = 0; i < n; i += 8)
		c = __builtin_ia32_crc32di(c, 0);
	return (uint32_t)c;
}

static void z_table(uint32_t t[4][256], size_t n)
{
	uint32_t bit[32];

	for (int b = 0; b < 32; b++)
		bit[b] = zeros_slow(1u << b, n);
	for (int k = 0; k < 4; k++)
		for (uint32_t v = 0; v < 256; v++) {
			uint32_t x = 0;

			for (int b = 0; b < 8; b++)
				if (v >> b & 1)
					x ^= bit[8 * k + b];
			t[k][v] = x;
		}
}

static void z_init(void)
{
	z_table(z_long, HW_LONG);
	z_table(z_short, HW_SHORT);
}

static inline uint32_t z_apply(const uint32_t t[4][256], uint64_t reg)
{
	return t[0][reg & 0xff] ^ t[1][(reg >> 8) & 0xff] ^ t[2][(reg >> 16) & 0xff] ^
	       t[3][(reg >> 24) & 0xff];
}

static inline uint64_t load64(const uint8_t *p)
{
	uint64_t w;

	memcpy(&w, p, 8);
	return w;
}

/* Blocks of 3 x @n bytes from *@p while they last: three chains each, joined with @t. */
__attribute__((target("sse4.2"))) static uint64_t
hw_blocks(uint64_t c, const uint8_t **p, size_t *len, size_t n, const uint32_t t[4][256])
{
	const uint8_t *q = *p;

	while (*len >= 3 * n) {
		uint64_t c1 = 0, c2 = 0;

		for (size_t i = 0; i < n; i += 8) {
			c = __builtin_ia32_crc32di(c, load64(q + i));
			c1 = __builtin_ia32_crc32di(c1, load64(q + n + i));
			c2 = __builtin_ia32_crc32di(c2, load64(q + 2 * n + i));
		}
		c = z_apply(t, z_apply(t, c) ^ c1) ^ c2;
		q += 3 * n;
		*len -= 3 * n;
	}
	*p = q;
	return c;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *buf,
							    size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = ~crc;

	while (len && ((uintptr_t)p & 7)) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
		len--;
	}
	if (len >= 3 * HW_SHORT) {
		pthread_once(&z_once, z_init);
		c = hw_blocks(c, &p, &len, HW_LONG, z_long);
		c = hw_blocks(c, &p, &len, HW_SHORT, z_short);
	}
	while (len >= 8) {
		c = __builtin_ia32_crc32di(c, load64(p));
		p += 8;
		len -= 8;
	}
	while (len--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return ~(uint32_t)c;
}

static bool have_hw(void)
{
	/* Every thread computes the same answer, so racing first calls are harmless. */
	static int cached = -1;
	int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);

	if (v < 0) {
		__builtin_cpu_init();
		v = __builtin_cpu_supports("sse4.2") ? 1 : 0;
		__atomic_store_n(&cached, v, __ATOMIC_RELAXED);
	}
	return v == 1;
}
#endif

uint32_t ps_crc32c(uint32_t crc, const void *buf, size_t len)
{
#if defined(__x86_64__)
	if (have_hw())
		return crc32c_hw(crc, buf, len);
#endif
	return ps_crc32c_sw(crc, buf, len);
}

const char *ps_crc32c_impl(void)
{
#if defined(__x86_64__)
	if (have_hw())
		return "sse4.2";
#endif
	return "slicing-by-8";
}
