/*
 * Control-plane framing: the incremental reader (fed whole, in pieces, and byte by byte), the
 * forms it must reject and the code each one gives, and the blocking helpers' timeouts over a
 * socketpair.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/ctl.h"

/* A framed Status{code, message} with @request_id. Caller frees. */
static uint8_t *status_frame(uint64_t request_id, int code, const char *msg, size_t *len)
{
	Psplus__Ctl__Status st = PSPLUS__CTL__STATUS__INIT;
	ps_ctl_env_t env;
	uint8_t *frame = NULL;

	st.code = code;
	st.message = (char *)msg;
	ps_ctl_env_init(&env, request_id);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_STATUS;
	env.status = &st;
	assert_int_equal(ps_ctl_encode(&env, &frame, len), 0);
	return frame;
}

/* Feed @len bytes in one call and expect @want (the whole buffer consumed on error). */
static int feed_all(const uint8_t *buf, size_t len, ps_ctl_env_t **out, char *why, size_t wl)
{
	struct ps_ctl_reader r;
	size_t used = 0;
	int rc;

	ps_ctl_reader_init(&r, 0);
	rc = ps_ctl_reader_feed(&r, buf, len, &used, out);
	if (why)
		snprintf(why, wl, "%s", r.why);
	ps_ctl_reader_fini(&r);
	return rc;
}

static void test_reader_byte_by_byte(void **state)
{
	size_t l1, l2, used;
	uint8_t *f1 = status_frame(1, -EIO, "first", &l1);
	uint8_t *f2 = status_frame(2, 0, "second frame, a little longer", &l2);
	uint8_t *both = malloc(l1 + l2);
	struct ps_ctl_reader r;
	ps_ctl_env_t *out;
	int got = 0, rc;

	memcpy(both, f1, l1);
	memcpy(both + l1, f2, l2);
	ps_ctl_reader_init(&r, 0);
	for (size_t i = 0; i < l1 + l2; i++) {
		assert_int_equal(ps_ctl_reader_mid_frame(&r), i != 0 && i != l1);
		rc = ps_ctl_reader_feed(&r, both + i, 1, &used, &out);
		assert_int_equal(used, 1);
		if (i == l1 - 1 || i == l1 + l2 - 1) {
			assert_int_equal(rc, 1);
			assert_non_null(out);
			assert_int_equal(out->request_id, got + 1);
			assert_string_equal(out->status->message,
					    got ? "second frame, a little longer" : "first");
			ps_ctl_env_free(out);
			got++;
		} else {
			assert_int_equal(rc, 0);
			assert_null(out);
		}
	}
	assert_int_equal(got, 2);
	assert_false(ps_ctl_reader_mid_frame(&r));
	ps_ctl_reader_fini(&r);
	free(both);
	free(f1);
	free(f2);
}

/* Two frames in one buffer: the reader stops at the end of the first. */
static void test_reader_stops_at_frame_end(void **state)
{
	size_t l1, l2, used;
	uint8_t *f1 = status_frame(1, 0, "a", &l1);
	uint8_t *f2 = status_frame(2, 0, "b", &l2);
	uint8_t *both = malloc(l1 + l2);
	struct ps_ctl_reader r;
	ps_ctl_env_t *out;

	memcpy(both, f1, l1);
	memcpy(both + l1, f2, l2);
	ps_ctl_reader_init(&r, 0);
	assert_int_equal(ps_ctl_reader_feed(&r, both, l1 + l2, &used, &out), 1);
	assert_int_equal(used, l1);
	assert_int_equal(out->request_id, 1);
	ps_ctl_env_free(out);
	assert_int_equal(ps_ctl_reader_feed(&r, both + used, l2, &used, &out), 1);
	assert_int_equal(used, l2);
	assert_int_equal(out->request_id, 2);
	ps_ctl_env_free(out);
	ps_ctl_reader_fini(&r);
	free(both);
	free(f1);
	free(f2);
}

/* Oversized prefixes are refused on the 4th byte, before anything is allocated. */
static void test_reject_oversized(void **state)
{
	const uint8_t big[] = {0x01, 0x00, 0x00, 0x01}; /* PS_CTL_FRAME_MAX + 1 */
	const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff};
	const uint8_t small_over[] = {0x00, 0x00, 0x04, 0x01}; /* 1025 */
	const uint8_t at_limit[] = {0x00, 0x00, 0x04, 0x00};   /* 1024 */
	struct ps_ctl_reader r;
	ps_ctl_env_t *out;
	size_t used;
	char why[160] = "";

	assert_int_equal(PS_CTL_FRAME_MAX + 1, 0x01000001);
	assert_int_equal(feed_all(big, 4, &out, why, sizeof(why)), PS_EBAD_MESSAGE);
	assert_non_null(strstr(why, "exceeds"));
	assert_int_equal(feed_all(huge, 4, &out, NULL, 0), PS_EBAD_MESSAGE);

	ps_ctl_reader_init(&r, 1024);
	assert_int_equal(ps_ctl_reader_feed(&r, small_over, 4, &used, &out), PS_EBAD_MESSAGE);
	assert_null(r.body);
	ps_ctl_reader_fini(&r);
	ps_ctl_reader_init(&r, 1024);
	assert_int_equal(ps_ctl_reader_feed(&r, at_limit, 4, &used, &out), 0);
	assert_true(ps_ctl_reader_mid_frame(&r));
	ps_ctl_reader_fini(&r);
	/* A limit above the protocol's is clamped to it. */
	ps_ctl_reader_init(&r, UINT32_MAX);
	assert_int_equal(r.max_frame, PS_CTL_FRAME_MAX);
	ps_ctl_reader_fini(&r);
}

static void test_reject_zero_length(void **state)
{
	const uint8_t zero[] = {0, 0, 0, 0};
	ps_ctl_env_t *out;
	char why[160] = "";

	assert_int_equal(feed_all(zero, 4, &out, why, sizeof(why)), PS_EBAD_MESSAGE);
	assert_non_null(strstr(why, "zero-length"));
}

static void test_reject_garbage(void **state)
{
	/* "hello": field 13 varint, then wire type 4 (end group), which proto3 never sends. */
	const uint8_t hello[] = {0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
	/* A length-delimited field claiming more bytes than the frame holds. */
	const uint8_t overrun[] = {0, 0, 0, 4, 0x08, 0x01, 0x52, 0x7f};
	/* Valid version, no body. */
	const uint8_t bodyless[] = {0, 0, 0, 2, 0x08, 0x01};
	/* Wire type 7 does not exist. */
	const uint8_t badwire[] = {0, 0, 0, 3, 0x08, 0x01, 0x0f};
	ps_ctl_env_t *out = NULL;
	char why[160] = "";

	assert_int_equal(feed_all(hello, sizeof(hello), &out, NULL, 0), PS_EBAD_MESSAGE);
	assert_null(out);
	assert_int_equal(feed_all(overrun, sizeof(overrun), &out, NULL, 0), PS_EBAD_MESSAGE);
	assert_int_equal(feed_all(bodyless, sizeof(bodyless), &out, why, sizeof(why)),
			 PS_EBAD_MESSAGE);
	assert_non_null(strstr(why, "without a body"));
	assert_int_equal(feed_all(badwire, sizeof(badwire), &out, NULL, 0), PS_EBAD_MESSAGE);
}

static void test_reject_proto_version(void **state)
{
	/* proto_version 2, ClusterInfoReq {} */
	const uint8_t v2[] = {0, 0, 0, 4, 0x08, 0x02, 0x72, 0x00};
	/* proto_version absent (0), ClusterInfoReq {} */
	const uint8_t v0[] = {0, 0, 0, 2, 0x72, 0x00};
	/* proto_version 300 and a body this build cannot decode: still named as a version. */
	const uint8_t v300_bad[] = {0, 0, 0, 5, 0x08, 0xac, 0x02, 0x52, 0x7f};
	ps_ctl_env_t *out = NULL;
	char why[160] = "";

	assert_int_equal(feed_all(v2, sizeof(v2), &out, why, sizeof(why)), PS_EPROTO_VERSION);
	assert_non_null(strstr(why, "proto_version 2"));
	assert_null(out);
	assert_int_equal(feed_all(v0, sizeof(v0), &out, NULL, 0), PS_EPROTO_VERSION);
	assert_int_equal(feed_all(v300_bad, sizeof(v300_bad), &out, why, sizeof(why)),
			 PS_EPROTO_VERSION);
	assert_non_null(strstr(why, "proto_version 300"));
}

static void socketpair_nb(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

/* read_fd over a socket whose bytes arrive one at a time. */
static void test_read_fd_byte_by_byte(void **state)
{
	size_t len;
	uint8_t *f = status_frame(77, PS_ETIMEOUT, "slow", &len);
	struct ps_ctl_reader r;
	ps_ctl_env_t *out;
	int sv[2];

	socketpair_nb(sv);
	ps_ctl_reader_init(&r, 0);
	assert_int_equal(ps_ctl_reader_read_fd(&r, sv[0], &out), 0);
	for (size_t i = 0; i < len; i++) {
		assert_int_equal(write(sv[1], f + i, 1), 1);
		if (i < len - 1) {
			assert_int_equal(ps_ctl_reader_read_fd(&r, sv[0], &out), 0);
			continue;
		}
		assert_int_equal(ps_ctl_reader_read_fd(&r, sv[0], &out), 1);
		assert_int_equal(out->request_id, 77);
		assert_int_equal(out->status->code, PS_ETIMEOUT);
		ps_ctl_env_free(out);
	}
	close(sv[1]);
	assert_int_equal(ps_ctl_reader_read_fd(&r, sv[0], &out), PS_EPEER_LOST);
	ps_ctl_reader_fini(&r);
	close(sv[0]);
	free(f);
}

/* A peer that closes in the middle of a frame: truncated, not a clean close. */
static void test_read_fd_truncated(void **state)
{
	const uint8_t part_hdr[] = {0, 0};
	const uint8_t part_body[] = {0, 0, 0, 100, 0x08, 0x01, 0x72};
	struct ps_ctl_reader r;
	ps_ctl_env_t *out;
	int sv[2];

	socketpair_nb(sv);
	ps_ctl_reader_init(&r, 0);
	assert_int_equal(write(sv[1], part_body, sizeof(part_body)), (ssize_t)sizeof(part_body));
	close(sv[1]);
	assert_int_equal(ps_ctl_reader_read_fd(&r, sv[0], &out), PS_EBAD_MESSAGE);
	assert_non_null(strstr(r.why, "truncated frame: closed after 3 of 100 bytes"));
	ps_ctl_reader_fini(&r);
	close(sv[0]);

	socketpair_nb(sv);
	ps_ctl_reader_init(&r, 0);
	assert_int_equal(write(sv[1], part_hdr, sizeof(part_hdr)), (ssize_t)sizeof(part_hdr));
	close(sv[1]);
	assert_int_equal(ps_ctl_reader_read_fd(&r, sv[0], &out), PS_EBAD_MESSAGE);
	assert_non_null(strstr(r.why, "prefix"));
	ps_ctl_reader_fini(&r);
	close(sv[0]);
}

static void test_send_recv(void **state)
{
	Psplus__Ctl__Shutdown sd = PSPLUS__CTL__SHUTDOWN__INIT;
	ps_ctl_env_t env, *out = NULL;
	int sv[2];

	socketpair_nb(sv);
	sd.reason = "bye";
	ps_ctl_env_init(&env, 5);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_SHUTDOWN;
	env.shutdown = &sd;
	assert_int_equal(ps_ctl_send(sv[1], &env, 1000, -1), 0);
	assert_int_equal(ps_ctl_recv(sv[0], 1000, -1, &out, NULL, 0), 0);
	assert_string_equal(out->shutdown->reason, "bye");
	ps_ctl_env_free(out);
	close(sv[0]);
	close(sv[1]);
}

static void test_recv_timeout_and_stop(void **state)
{
	ps_ctl_env_t *out = NULL;
	uint64_t t0;
	int sv[2], stop[2];
	char why[160] = "";

	socketpair_nb(sv);
	t0 = ps_clock_now_ms();
	assert_int_equal(ps_ctl_recv(sv[0], 50, -1, &out, why, sizeof(why)), PS_ETIMEOUT);
	assert_true(ps_clock_now_ms() - t0 >= 45);
	assert_null(out);
	/* A readable stop_fd (a signalfd in the roles) ends the wait at once. */
	assert_int_equal(pipe(stop), 0);
	assert_int_equal(write(stop[1], "x", 1), 1);
	t0 = ps_clock_now_ms();
	assert_int_equal(ps_ctl_recv(sv[0], 5000, stop[0], &out, NULL, 0), PS_ESHUTDOWN);
	assert_true(ps_clock_now_ms() - t0 < 1000);
	/* The peer closing: PS_EPEER_LOST, not a timeout. */
	close(sv[1]);
	assert_int_equal(ps_ctl_recv(sv[0], 5000, -1, &out, NULL, 0), PS_EPEER_LOST);
	close(sv[0]);
	close(stop[0]);
	close(stop[1]);
}

static void test_write_timeout_and_peer_lost(void **state)
{
	size_t big = 8u << 20;
	uint8_t *buf = calloc(1, big);
	int sv[2];

	socketpair_nb(sv);
	/* Nobody reads sv[0]: the socket buffer fills and the write times out. */
	assert_int_equal(ps_ctl_write_all(sv[1], buf, big, 50, -1), PS_ETIMEOUT);
	close(sv[0]);
	assert_int_equal(ps_ctl_write_all(sv[1], buf, 16, 50, -1), PS_EPEER_LOST);
	close(sv[1]);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reader_byte_by_byte),
		cmocka_unit_test(test_reader_stops_at_frame_end),
		cmocka_unit_test(test_reject_oversized),
		cmocka_unit_test(test_reject_zero_length),
		cmocka_unit_test(test_reject_garbage),
		cmocka_unit_test(test_reject_proto_version),
		cmocka_unit_test(test_read_fd_byte_by_byte),
		cmocka_unit_test(test_read_fd_truncated),
		cmocka_unit_test(test_send_recv),
		cmocka_unit_test(test_recv_timeout_and_stop),
		cmocka_unit_test(test_write_timeout_and_peer_lost),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
