/*
 * CRC32C: the standard check value and the iSCSI test vectors (RFC 3720, B.4), incremental
 * computation in arbitrary pieces, and the hardware path (one chain, and three interleaved
 * chains for long buffers) agreeing with slicing-by-8 at every length and alignment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "common/crc32c.h"

static void test_check_value(void **state)
{
	assert_int_equal(ps_crc32c(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(ps_crc32c_sw(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(ps_crc32c(0, "", 0), 0);
	assert_int_equal(ps_crc32c(0, NULL, 0), 0);
	printf("crc32c implementation: %s\n", ps_crc32c_impl());
}

static void test_rfc3720_vectors(void **state)
{
	uint8_t buf[48];

	memset(buf, 0, 32);
	assert_int_equal(ps_crc32c(0, buf, 32), 0x8a9136aau);
	memset(buf, 0xff, 32);
	assert_int_equal(ps_crc32c(0, buf, 32), 0x62a8ab43u);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(ps_crc32c(0, buf, 32), 0x46dd794eu);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	assert_int_equal(ps_crc32c(0, buf, 32), 0x113fdb5cu);
	/* An iSCSI read PDU header. */
	static const uint8_t pdu[48] = {
		0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
		0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	};
	assert_int_equal(ps_crc32c(0, pdu, sizeof(pdu)), 0xd9963a56u);
	assert_int_equal(ps_crc32c_sw(0, pdu, sizeof(pdu)), 0xd9963a56u);
}

static void test_incremental_and_alignment(void **state)
{
	static uint8_t buf[4096 + 16];
	uint64_t s = 12345;

	for (size_t i = 0; i < sizeof(buf); i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (uint8_t)(s >> 56);
	}
	for (size_t off = 0; off < 16; off++)
		for (size_t len = 0; len <= 300; len += (len < 40 ? 1 : 37)) {
			uint32_t whole = ps_crc32c_sw(0, buf + off, len);

			assert_int_equal(ps_crc32c(0, buf + off, len), whole);
			for (size_t cut = 0; cut <= len; cut += 7) {
				uint32_t c = ps_crc32c(0, buf + off, cut);

				assert_int_equal(ps_crc32c(c, buf + off + cut, len - cut), whole);
				c = ps_crc32c_sw(0, buf + off, cut);
				assert_int_equal(ps_crc32c_sw(c, buf + off + cut, len - cut),
						 whole);
			}
		}
	assert_int_equal(ps_crc32c(0, buf, 4096), ps_crc32c_sw(0, buf, 4096));
}

/* Long buffers take the three-chain path in 24 KiB and 768-byte blocks: every length around
 * those block sizes, at every alignment, and in pieces, agrees with slicing-by-8. */
static void test_long_buffers(void **state)
{
	static uint8_t buf[3 * 8192 * 3 + 4096];
	static const size_t lens[] = {767,   768,   769,   775,	  776,	 1535,	1536,
				      1544,  24575, 24576, 24577, 24583, 24584, 25343,
				      25344, 25352, 49152, 49920, 73727, 73728, 73736};
	uint64_t s = 987654321;

	for (size_t i = 0; i < sizeof(buf); i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (uint8_t)(s >> 56);
	}
	for (size_t off = 0; off < 9; off++)
		for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
			size_t len = lens[k];
			uint32_t whole = ps_crc32c_sw(0, buf + off, len);
			uint32_t c;

			assert_true(off + len <= sizeof(buf));
			assert_int_equal(ps_crc32c(0, buf + off, len), whole);
			c = ps_crc32c(0, buf + off, len / 3);
			assert_int_equal(ps_crc32c(c, buf + off + len / 3, len - len / 3), whole);
			c = ps_crc32c(0x12345678u, buf + off, len);
			assert_int_equal(c, ps_crc32c_sw(0x12345678u, buf + off, len));
		}
	memset(buf, 0, sizeof(buf));
	assert_int_equal(ps_crc32c(0, buf, 32), 0x8a9136aau);
	assert_int_equal(ps_crc32c(0, buf, sizeof(buf)), ps_crc32c_sw(0, buf, sizeof(buf)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_value),
		cmocka_unit_test(test_rfc3720_vectors),
		cmocka_unit_test(test_incremental_and_alignment),
		cmocka_unit_test(test_long_buffers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
