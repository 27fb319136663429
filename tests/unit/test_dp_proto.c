/*
 * The data-plane wire format (common/dp_proto.c): every header survives encode -> decode with
 * every field intact; the bytes sit where docs/wire.md says (checked with this file's own
 * little-endian reads, not the codec's); every truncation, bad magic, version, op, flag and
 * reserved byte is refused; the initializer and optimizer slots round-trip for every kind.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/dp_proto.h"

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static struct ps_dp_req sample_req(void)
{
	return (struct ps_dp_req){
		.magic = PS_DP_REQ_MAGIC,
		.version = PS_DP_VERSION,
		.op = PS_DP_PULL_HASH,
		.flags = PS_DP_F_KEY128 | PS_DP_F_SNAPSHOT,
		.req_id = 0x01020304,
		.var_id = 0x11223344,
		.count = 0x55667788,
		.width = 0x99aabbcc,
		.cluster_version = 0x0123456789abcdefull,
		.begin = 0xfedcba9876543210ull,
		.worker_id = 0xdeadbeef,
		.step = 0xcafef00d,
		.dst_addr = 0x1122334455667788ull,
		.dst_rkey = 0x0badc0de,
		.dst_len = 0x7fffffff,
	};
}

static void test_req_round_trip_and_layout(void **state)
{
	struct ps_dp_req r = sample_req(), back;
	uint8_t b[PS_DP_REQ_BYTES + 8];

	memset(b, 0xee, sizeof(b));
	ps_dp_req_encode(&r, b);
	assert_int_equal(b[PS_DP_REQ_BYTES], 0xee); /* nothing written past the header */
	/* The documented offsets. */
	assert_memory_equal(b, "PSDQ", 4);
	assert_int_equal(b[4], PS_DP_VERSION);
	assert_int_equal(b[5], PS_DP_PULL_HASH);
	assert_int_equal(b[6], PS_DP_F_KEY128 | PS_DP_F_SNAPSHOT);
	assert_int_equal(b[7], 0);
	assert_int_equal(le32(b + 8), r.req_id);
	assert_int_equal(le32(b + 12), r.var_id);
	assert_int_equal(le32(b + 16), r.count);
	assert_int_equal(le32(b + 20), r.width);
	assert_true(le64(b + 24) == r.cluster_version);
	assert_true(le64(b + 32) == r.begin);
	assert_int_equal(le32(b + 40), r.worker_id);
	assert_int_equal(le32(b + 44), r.step);
	assert_true(le64(b + 48) == r.dst_addr);
	assert_int_equal(le32(b + 56), r.dst_rkey);
	assert_int_equal(le32(b + 60), r.dst_len);

	memset(&back, 0, sizeof(back));
	assert_int_equal(ps_dp_req_decode(b, PS_DP_REQ_BYTES, &back), 0);
	assert_memory_equal(&back, &r, sizeof(r));
	/* A longer message (header + payload) decodes the same header. */
	assert_int_equal(ps_dp_req_decode(b, sizeof(b), &back), 0);
	assert_memory_equal(&back, &r, sizeof(r));
}

/* Every length short of the header is refused, reading nothing beyond it (ASan checks). */
static void test_req_every_truncation(void **state)
{
	struct ps_dp_req r = sample_req(), back;
	uint8_t b[PS_DP_REQ_BYTES];

	ps_dp_req_encode(&r, b);
	for (size_t len = 0; len < PS_DP_REQ_BYTES; len++) {
		uint8_t *exact = malloc(len ? len : 1);

		memcpy(exact, b, len);
		assert_int_equal(ps_dp_req_decode(exact, len, &back), PS_EBAD_MESSAGE);
		free(exact);
	}
	assert_int_equal(ps_dp_req_decode(NULL, 64, &back), PS_EBAD_MESSAGE);
}

static void test_req_bad_fields(void **state)
{
	struct ps_dp_req r = sample_req(), back;
	uint8_t b[PS_DP_REQ_BYTES];

	r.magic = PS_DP_REPLY_MAGIC; /* a reply is not a request */
	ps_dp_req_encode(&r, b);
	assert_int_equal(ps_dp_req_decode(b, sizeof(b), &back), PS_EBAD_MESSAGE);
	r = sample_req();
	ps_dp_req_encode(&r, b);
	b[0] ^= 1;
	assert_int_equal(ps_dp_req_decode(b, sizeof(b), &back), PS_EBAD_MESSAGE);

	r = sample_req();
	r.version = 2;
	ps_dp_req_encode(&r, b);
	assert_int_equal(ps_dp_req_decode(b, sizeof(b), &back), PS_EPROTO_VERSION);
	r.version = 0;
	ps_dp_req_encode(&r, b);
	assert_int_equal(ps_dp_req_decode(b, sizeof(b), &back), PS_EPROTO_VERSION);

	r = sample_req();
	for (unsigned op = 0; op < 256; op++) {
		r.op = (uint8_t)op;
		r.flags = 0;
		ps_dp_req_encode(&r, b);
		assert_int_equal(ps_dp_req_decode(b, sizeof(b), &back),
				 op >= 1 && op <= PS_DP_OP_MAX ? 0 : PS_EBAD_MESSAGE);
	}
}

/* Which flags each op allows; every other bit of the 16 is malformed. */
static void test_req_flags_per_op(void **state)
{
	static const struct {
		uint8_t op;
		uint16_t ok;
	} t[] = {
		{PS_DP_PULL_DENSE, PS_DP_F_SNAPSHOT},
		{PS_DP_PULL_SPARSE, PS_DP_F_SNAPSHOT},
		{PS_DP_PULL_HASH, PS_DP_F_SNAPSHOT | PS_DP_F_KEY128},
		{PS_DP_PUSH_DENSE, PS_DP_F_SYNC},
		{PS_DP_PUSH_SPARSE, PS_DP_F_SYNC},
		{PS_DP_PUSH_HASH, PS_DP_F_SYNC | PS_DP_F_KEY128},
		{PS_DP_DECLARE, 0},
	};
	struct ps_dp_req r = sample_req(), back;
	uint8_t b[PS_DP_REQ_BYTES];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		r.op = t[i].op;
		for (unsigned bit = 0; bit < 16; bit++) {
			r.flags = (uint16_t)(1u << bit);
			ps_dp_req_encode(&r, b);
			assert_int_equal(ps_dp_req_decode(b, sizeof(b), &back),
					 r.flags & t[i].ok ? 0 : PS_EBAD_MESSAGE);
		}
		r.flags = t[i].ok;
		ps_dp_req_encode(&r, b);
		assert_int_equal(ps_dp_req_decode(b, sizeof(b), &back), 0);
		assert_int_equal(back.flags, t[i].ok);
	}
}

static void test_reply(void **state)
{
	struct ps_dp_reply r = {.magic = PS_DP_REPLY_MAGIC,
				.version = PS_DP_VERSION,
				.op = PS_DP_PUSH_SPARSE,
				.req_id = 0xa1b2c3d4,
				.status = PS_EOUT_OF_RANGE,
				.cluster_version = 0x8877665544332211ull},
			   back;
	uint8_t b[PS_DP_REPLY_BYTES];

	ps_dp_reply_encode(&r, b);
	assert_memory_equal(b, "PSDR", 4);
	assert_int_equal(b[4], 1);
	assert_int_equal(b[5], PS_DP_PUSH_SPARSE);
	assert_int_equal(le32(b + 8), r.req_id);
	assert_int_equal((int32_t)le32(b + 12), PS_EOUT_OF_RANGE);
	assert_true(le64(b + 16) == r.cluster_version);
	assert_int_equal(ps_dp_reply_decode(b, sizeof(b), &back), 0);
	assert_memory_equal(&back, &r, sizeof(r));

	for (size_t len = 0; len < sizeof(b); len++) {
		uint8_t *exact = malloc(len ? len : 1);

		memcpy(exact, b, len);
		assert_int_equal(ps_dp_reply_decode(exact, len, &back), PS_EBAD_MESSAGE);
		free(exact);
	}
	b[6] = 1; /* flags are reserved */
	assert_int_equal(ps_dp_reply_decode(b, sizeof(b), &back), PS_EBAD_MESSAGE);
	ps_dp_reply_encode(&r, b);
	b[4] = 9;
	assert_int_equal(ps_dp_reply_decode(b, sizeof(b), &back), PS_EPROTO_VERSION);
	ps_dp_reply_encode(&r, b);
	b[5] = 0;
	assert_int_equal(ps_dp_reply_decode(b, sizeof(b), &back), PS_EBAD_MESSAGE);
	b[5] = PS_DP_OP_MAX + 1;
	assert_int_equal(ps_dp_reply_decode(b, sizeof(b), &back), PS_EBAD_MESSAGE);
	ps_dp_reply_encode(&r, b);
	b[3] = 0;
	assert_int_equal(ps_dp_reply_decode(b, sizeof(b), &back), PS_EBAD_MESSAGE);
}

/* ---- DECLARE and the spec slots --------------------------------------------------------- */

static struct ps_var_spec sample_spec(enum ps_optim_kind ok)
{
	struct ps_var_spec s = {
		.kind = PS_VAR_SPARSE,
		.dtype = PS_DTYPE_FLOAT32,
		.rows = 1000,
		.width = 16,
		.init = {.kind = PS_INIT_TRUNCATED_NORMAL,
			 .value = 1.5f,
			 .min = -2.f,
			 .max = 3.f,
			 .mean = 0.25f,
			 .stddev = 0.01f,
			 .seed = 0xfeedfacecafebeefull},
		.optim = ps_optimizer_defaults(ok),
		.admit_prob = 0.5f,
		.admit_seed = 77,
	};

	if (ok == PS_OPTIM_MOMENTUM)
		s.optim.momentum.use_nesterov = true;
	if (ok == PS_OPTIM_ADAM)
		s.optim.adam.use_nesterov = true;
	if (ok == PS_OPTIM_FTRL) {
		s.optim.ftrl.l1 = 0.125f;
		s.optim.ftrl.l2 = 0.25f;
		s.optim.ftrl.l2_shrinkage = 0.5f;
	}
	return s;
}

static struct ps_dp_declare sample_declare(const struct ps_var_spec *s)
{
	struct ps_dp_declare d;

	memset(&d, 0, sizeof(d));
	ps_dp_spec_encode(s, &d);
	d.part_begin = 100;
	d.part_end = 600;
	d.shard = 2;
	d.nshards = 4;
	d.num_workers = 3;
	strcpy(d.name, "embedding/user");
	return d;
}

static void assert_spec_equal(const struct ps_var_spec *a, const struct ps_var_spec *b)
{
	assert_int_equal(a->kind, b->kind);
	assert_int_equal(a->dtype, b->dtype);
	assert_true(a->rows == b->rows);
	assert_int_equal(a->width, b->width);
	assert_memory_equal(&a->init, &b->init, sizeof(a->init));
	assert_int_equal(a->optim.kind, b->optim.kind);
	/* The union's bytes past the kind's member may be anything in @a: compare members. */
	switch (a->optim.kind) {
	case PS_OPTIM_MOMENTUM:
		assert_true(a->optim.momentum.learning_rate == b->optim.momentum.learning_rate);
		assert_true(a->optim.momentum.momentum == b->optim.momentum.momentum);
		assert_int_equal(a->optim.momentum.use_nesterov, b->optim.momentum.use_nesterov);
		break;
	case PS_OPTIM_ADAM:
		assert_true(a->optim.adam.learning_rate == b->optim.adam.learning_rate);
		assert_true(a->optim.adam.beta1 == b->optim.adam.beta1);
		assert_true(a->optim.adam.beta2 == b->optim.adam.beta2);
		assert_true(a->optim.adam.epsilon == b->optim.adam.epsilon);
		assert_int_equal(a->optim.adam.use_nesterov, b->optim.adam.use_nesterov);
		break;
	case PS_OPTIM_FTRL:
		assert_memory_equal(&a->optim.ftrl, &b->optim.ftrl, sizeof(a->optim.ftrl));
		break;
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_CENTERED_RMSPROP:
		assert_memory_equal(&a->optim.rmsprop, &b->optim.rmsprop, sizeof(a->optim.rmsprop));
		break;
	case PS_OPTIM_ADAGRAD:
		assert_memory_equal(&a->optim.adagrad, &b->optim.adagrad, sizeof(a->optim.adagrad));
		break;
	default:
		assert_true(a->optim.sgd.learning_rate == b->optim.sgd.learning_rate);
		break;
	}
	assert_true(a->admit_prob == b->admit_prob);
	assert_true(a->admit_seed == b->admit_seed);
}

static void test_declare_round_trip_every_optimizer(void **state)
{
	for (int k = PS_OPTIM_SGD; k <= PS_OPTIM_FTRL; k++) {
		struct ps_var_spec s = sample_spec((enum ps_optim_kind)k), back;
		struct ps_dp_declare d = sample_declare(&s), dd;
		uint8_t b[PS_DP_DECLARE_BYTES + 4];

		memset(b, 0xee, sizeof(b));
		ps_dp_declare_encode(&d, b);
		assert_int_equal(b[PS_DP_DECLARE_BYTES], 0xee);
		assert_int_equal(le32(b + 0), PS_VAR_SPARSE);
		assert_int_equal(le32(b + 4), 16);
		assert_true(le64(b + 8) == 1000);
		assert_true(le64(b + 16) == 100);
		assert_true(le64(b + 24) == 600);
		assert_int_equal(le32(b + 32), 2);
		assert_int_equal(le32(b + 36), 4);
		assert_int_equal(le32(b + 40), PS_INIT_TRUNCATED_NORMAL); /* init slot: kind */
		assert_true(le64(b + 40 + 24) == s.init.seed);		  /* init slot: seed */
		assert_int_equal(le32(b + 104), (uint32_t)k);		  /* optim slot: kind */
		assert_int_equal(le32(b + 108), k == PS_OPTIM_MOMENTUM || k == PS_OPTIM_ADAM);
		assert_int_equal(le32(b + 172), 3);
		assert_true(le64(b + 176) == 77);
		assert_string_equal((const char *)b + 184, "embedding/user");

		assert_int_equal(ps_dp_declare_decode(b, PS_DP_DECLARE_BYTES, &dd), 0);
		assert_memory_equal(&dd, &d, sizeof(d));
		assert_int_equal(ps_dp_spec_decode(&dd, &back), 0);
		assert_spec_equal(&s, &back);
	}
}

static void test_declare_every_truncation(void **state)
{
	struct ps_var_spec s = sample_spec(PS_OPTIM_ADAM);
	struct ps_dp_declare d = sample_declare(&s), dd;
	uint8_t b[PS_DP_DECLARE_BYTES];

	ps_dp_declare_encode(&d, b);
	for (size_t len = 0; len < PS_DP_DECLARE_BYTES; len++) {
		uint8_t *exact = malloc(len ? len : 1);

		memcpy(exact, b, len);
		assert_int_equal(ps_dp_declare_decode(exact, len, &dd), PS_EBAD_MESSAGE);
		free(exact);
	}
}

/* Flip @b[@off] to @v and expect the decoder to refuse the payload. */
static void expect_refused(const uint8_t *good, size_t off, uint8_t v)
{
	uint8_t b[PS_DP_DECLARE_BYTES];
	struct ps_dp_declare dd;

	memcpy(b, good, sizeof(b));
	b[off] = v;
	assert_int_equal(ps_dp_declare_decode(b, sizeof(b), &dd), PS_EBAD_MESSAGE);
}

static void test_declare_bad_fields(void **state)
{
	struct ps_var_spec s = sample_spec(PS_OPTIM_ADAGRAD);
	struct ps_dp_declare d = sample_declare(&s);
	uint8_t b[PS_DP_DECLARE_BYTES];

	ps_dp_declare_encode(&d, b);
	expect_refused(b, 0, 4);	  /* var kind */
	expect_refused(b, 4, 0);	  /* width 0 (other bytes of it are 0 already) */
	expect_refused(b, 17, 0xff);	  /* part_begin 0xff64 > part_end */
	expect_refused(b, 32, 4);	  /* shard == nshards */
	expect_refused(b, 36, 0);	  /* nshards 0 */
	expect_refused(b, 172, 0);	  /* num_workers 0 */
	expect_refused(b, 40, 5);	  /* initializer kind */
	expect_refused(b, 40 + 40, 1);	  /* init slot reserved byte */
	expect_refused(b, 104, 7);	  /* optimizer kind */
	expect_refused(b, 108, 1);	  /* nesterov on adagrad */
	expect_refused(b, 104 + 16, 1);	  /* adagrad has 2 params: the third must be 0 */
	expect_refused(b, 104 + 63, 1);	  /* optimizer slot tail */
	expect_refused(b, 184 + 20, 'x'); /* bytes after the name's NUL must be 0 */
	/* A name filling all 64 bytes has no NUL. */
	{
		uint8_t c[PS_DP_DECLARE_BYTES];
		struct ps_dp_declare dd;

		memcpy(c, b, sizeof(c));
		memset(c + 184, 'a', 64);
		assert_int_equal(ps_dp_declare_decode(c, sizeof(c), &dd), PS_EBAD_MESSAGE);
		c[184 + 63] = 0;
		assert_int_equal(ps_dp_declare_decode(c, sizeof(c), &dd), 0);
		assert_int_equal(strlen(dd.name), 63);
	}
	/* part_end beyond the rows (sparse) and beyond 65536 buckets (hash). */
	d.part_end = 1001;
	ps_dp_declare_encode(&d, b);
	{
		struct ps_dp_declare dd;

		assert_int_equal(ps_dp_declare_decode(b, sizeof(b), &dd), PS_EBAD_MESSAGE);
		d.part_end = 1000;
		ps_dp_declare_encode(&d, b);
		assert_int_equal(ps_dp_declare_decode(b, sizeof(b), &dd), 0);
		d.kind = PS_VAR_HASH64;
		d.part_end = PS_HASH_BUCKETS + 1;
		ps_dp_declare_encode(&d, b);
		assert_int_equal(ps_dp_declare_decode(b, sizeof(b), &dd), PS_EBAD_MESSAGE);
		d.part_end = PS_HASH_BUCKETS;
		ps_dp_declare_encode(&d, b);
		assert_int_equal(ps_dp_declare_decode(b, sizeof(b), &dd), 0);
	}
}

/* Equal specs encode to equal bytes (the server compares declarations bytewise). */
static void test_declare_canonical(void **state)
{
	struct ps_var_spec s = sample_spec(PS_OPTIM_SGD), t;
	struct ps_dp_declare d1, d2;
	uint8_t b1[PS_DP_DECLARE_BYTES], b2[PS_DP_DECLARE_BYTES];

	/* Garbage in the union past SGD's member, and in the name after the NUL. */
	memset(&t, 0x5a, sizeof(t));
	t.kind = s.kind;
	t.dtype = s.dtype;
	t.rows = s.rows;
	t.width = s.width;
	t.init = s.init;
	t.optim.kind = PS_OPTIM_SGD;
	t.optim.sgd.learning_rate = s.optim.sgd.learning_rate;
	t.admit_prob = s.admit_prob;
	t.admit_seed = s.admit_seed;
	d1 = sample_declare(&s);
	memset(&d2, 0x77, sizeof(d2));
	ps_dp_spec_encode(&t, &d2);
	d2.part_begin = d1.part_begin;
	d2.part_end = d1.part_end;
	d2.shard = d1.shard;
	d2.nshards = d1.nshards;
	d2.num_workers = d1.num_workers;
	strcpy(d2.name, d1.name);
	ps_dp_declare_encode(&d1, b1);
	ps_dp_declare_encode(&d2, b2);
	assert_memory_equal(b1, b2, sizeof(b1));
}

static void test_spec_decode_bad_kind(void **state)
{
	struct ps_var_spec s = sample_spec(PS_OPTIM_SGD), out;
	struct ps_dp_declare d = sample_declare(&s);

	d.kind = 9;
	assert_int_equal(ps_dp_spec_decode(&d, &out), PS_EBAD_MESSAGE);
	d.kind = PS_VAR_HASH128;
	assert_int_equal(ps_dp_spec_decode(&d, &out), 0);
	assert_int_equal(out.kind, PS_VAR_HASH128);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_req_round_trip_and_layout),
		cmocka_unit_test(test_req_every_truncation),
		cmocka_unit_test(test_req_bad_fields),
		cmocka_unit_test(test_req_flags_per_op),
		cmocka_unit_test(test_reply),
		cmocka_unit_test(test_declare_round_trip_every_optimizer),
		cmocka_unit_test(test_declare_every_truncation),
		cmocka_unit_test(test_declare_bad_fields),
		cmocka_unit_test(test_declare_canonical),
		cmocka_unit_test(test_spec_decode_bad_kind),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
