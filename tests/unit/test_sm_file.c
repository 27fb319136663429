/*
 * Streaming models: the manager (GetManager / OpenWriter / OpenWriteAny, scheme errors, model
 * validation, counting), none://, and file://: numbered deltas and the manifest followed by a
 * reader, every record and deletion read back exactly, several writers sharing a folder,
 * uncommitted writes invisible, corrupt and truncated deltas refused, and crashes between the
 * commit steps never listing a partial delta.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "model_io/mio_internal.h"
#include "model_io/sm.h"
#include "tests/unit/mio_test_util.h"

static char dir[512], url[600];
static char err[8192];

static int setup(void **state)
{
	tm_tmpdir(dir, sizeof(dir), "sm-file");
	snprintf(url, sizeof(url), "file://%s/deltas", dir);
	return 0;
}

static int teardown(void **state)
{
	tm_rmrf(dir);
	return 0;
}

static const char *ddir(void)
{
	static char p[600];

	snprintf(p, sizeof(p), "%s/deltas", dir);
	return p;
}

/* Files in the delta folder whose name starts with @prefix. */
static int count_files(const char *prefix)
{
	DIR *d = opendir(ddir());
	struct dirent *e;
	int n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		n += !strncmp(e->d_name, prefix, strlen(prefix));
	closedir(d);
	return n;
}

static void test_manager(void **state)
{
	struct ps_sm_writer *w;
	struct ps_sm_writer_stats st;
	float v[6] = {1, 2, 3, 4, 5, 6};
	uint64_t ids[2] = {7, 9};
	struct ps_sm_dense_model dm = {
		.var_name = "d", .var_id = 1, .width = 3, .nrows = 2, .values = v};
	struct ps_sm_sparse_model sp = {
		.var_name = "s", .var_id = 2, .width = 3, .n = 2, .ids = ids, .values = v};
	struct ps_sm_hash_model hm = {.var_name = "h",
				      .var_id = 3,
				      .width = 3,
				      .key_bits = 64,
				      .n = 2,
				      .keys = ids,
				      .values = v,
				      .ndeleted = 1,
				      .deleted = ids};

	assert_ptr_equal(ps_sm_manager_get("file"), ps_sm_manager_get("file"));
	assert_non_null(ps_sm_manager_get("none"));
	assert_null(ps_sm_manager_get("zk"));
	assert_null(ps_sm_manager_get("nosuch"));
	assert_null(ps_sm_manager_get(NULL));

	assert_int_equal(ps_sm_open_writer("zk://h:1/x", NULL, &w, err, sizeof(err)),
			 PS_EUNSUPPORTED_SCHEME);
	assert_non_null(strstr(err, "no streaming-model writer for scheme 'zk'"));
	assert_int_equal(ps_sm_open_writer("nosuch://x", NULL, &w, err, sizeof(err)),
			 PS_EUNSUPPORTED_SCHEME);
	assert_int_equal(ps_sm_open_writer("file://relative", NULL, &w, err, sizeof(err)),
			 PS_EBAD_URL);
	assert_int_equal(ps_sm_open_writer("none://x", NULL, &w, err, sizeof(err)), PS_EBAD_URL);
	assert_int_equal(ps_sm_open_writer("/no/scheme", NULL, &w, err, sizeof(err)), PS_EBAD_URL);
	assert_null(w);

	/* none:// discards, and the manager counts. */
	assert_int_equal(ps_sm_open_writer("none://", NULL, &w, err, sizeof(err)), 0);
	assert_int_equal(ps_sm_write_dense(w, &dm), 0);
	assert_int_equal(ps_sm_write_sparse(w, &sp), 0);
	assert_int_equal(ps_sm_write_hash(w, &hm), 0);
	assert_int_equal(ps_sm_writer_commit(w), 0);
	/* Invalid models are refused by the manager, uncounted, with a message. */
	dm.width = 0;
	assert_int_equal(ps_sm_write_dense(w, &dm), -EINVAL);
	assert_non_null(strstr(ps_sm_writer_errmsg(w), "width 0"));
	dm.width = 3;
	dm.nslots = 300;
	assert_int_equal(ps_sm_write_dense(w, &dm), -EINVAL);
	dm.nslots = 0;
	dm.values = NULL;
	assert_int_equal(ps_sm_write_dense(w, &dm), -EINVAL);
	dm.values = v;
	sp.ids = NULL;
	assert_int_equal(ps_sm_write_sparse(w, &sp), -EINVAL);
	sp.ids = ids;
	hm.key_bits = 32;
	assert_int_equal(ps_sm_write_hash(w, &hm), -EINVAL);
	hm.key_bits = 128;
	assert_int_equal(ps_sm_write_hash(w, &hm), -EINVAL); /* 64-bit arrays given */
	assert_non_null(strstr(ps_sm_writer_errmsg(w), "128-bit keys given in the 64-bit"));
	hm.key_bits = 64;
	hm.deleted = NULL;
	assert_int_equal(ps_sm_write_hash(w, &hm), -EINVAL);
	hm.deleted = ids;
	assert_int_equal(ps_sm_write_dense(NULL, &dm), -EINVAL);
	ps_sm_writer_stats(w, &st);
	assert_int_equal(st.models, 3);
	assert_int_equal(st.dense_rows, 2);
	assert_int_equal(st.sparse_rows, 2);
	assert_int_equal(st.hash_rows, 2);
	assert_int_equal(st.hash_deletes, 1);
	assert_int_equal(st.commits, 1);
	assert_int_equal(st.value_bytes, 3 * 24);
	ps_sm_writer_close(w);
	ps_sm_writer_close(NULL);
}

/* Writes delta @k (1-based) of a fixed pattern: one record of each kind. */
static void write_delta(struct ps_sm_writer *w, int k)
{
	float v[2 * 3 * 3];
	uint64_t ids[2] = {(uint64_t)k, (uint64_t)k + 10};
	struct ps_key128 keys[2] = {{(uint64_t)k, 1}, {(uint64_t)k, 2}}, dels[1] = {{99, 98}};
	uint64_t del64[3] = {1000, 1001, (uint64_t)k};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		v[i] = (float)k * 100 + (float)i;
	struct ps_sm_dense_model dm = {.var_name = "dense",
				       .var_id = 1,
				       .width = 3,
				       .rows_begin = (uint64_t)k,
				       .nrows = 2,
				       .values = v};
	struct ps_sm_sparse_model sp = {.var_name = "sparse",
					.var_id = 2,
					.width = 3,
					.nslots = 2,
					.n = 2,
					.ids = ids,
					.values = v};
	struct ps_sm_hash_model h64 = {.var_name = "h64",
				       .var_id = 3,
				       .width = 3,
				       .key_bits = 64,
				       .n = 2,
				       .keys = ids,
				       .values = v,
				       .ndeleted = 3,
				       .deleted = del64};
	struct ps_sm_hash_model h128 = {.var_name = "",
					.var_id = 4,
					.width = 1,
					.key_bits = 128,
					.n = 2,
					.keys128 = keys,
					.values = v,
					.ndeleted = 1,
					.deleted128 = dels};

	assert_int_equal(ps_sm_write_dense(w, &dm), 0);
	assert_int_equal(ps_sm_write_sparse(w, &sp), 0);
	assert_int_equal(ps_sm_write_hash(w, &h64), 0);
	assert_int_equal(ps_sm_write_hash(w, &h128), 0);
}

/* Reads delta @k back and checks every record against write_delta(). */
static void check_delta(const char *path, int k, uint64_t writer_id)
{
	struct ps_sm_delta_reader *r;
	struct ps_sm_record rec;
	int n = 0;

	assert_int_equal(ps_sm_delta_reader_open(path, &r, err, sizeof(err)), 0);
	assert_int_equal(ps_sm_delta_reader_header(r)->writer_id, writer_id);
	assert_int_equal(ps_sm_delta_reader_header(r)->rows, 8);
	assert_int_equal(ps_sm_delta_reader_header(r)->deletes, 4);
	assert_int_equal(ps_sm_delta_reader_header(r)->records, 6);
	while (ps_sm_delta_reader_next(r, &rec) == 1) {
		n++;
		switch (n) {
		case 1:
			assert_int_equal(rec.type, PS_SM_REC_DENSE);
			assert_string_equal(rec.var_name, "dense");
			assert_int_equal(rec.begin, k);
			assert_int_equal(rec.count, 2);
			assert_null(rec.keys);
			assert_true(rec.values[5] == (float)k * 100 + 5);
			break;
		case 2:
			assert_int_equal(rec.type, PS_SM_REC_SPARSE);
			assert_int_equal(rec.nslots, 2);
			assert_int_equal(rec.keys[1], k + 10);
			assert_true(rec.values[17] == (float)k * 100 + 17);
			break;
		case 3: /* deletions before the rows of the same model */
			assert_int_equal(rec.type, PS_SM_REC_HASH64_DEL);
			assert_int_equal(rec.count, 3);
			assert_int_equal(rec.keys[2], k);
			assert_null(rec.values);
			break;
		case 4:
			assert_int_equal(rec.type, PS_SM_REC_HASH64);
			assert_int_equal(rec.var_id, 3);
			assert_int_equal(rec.keys[0], k);
			break;
		case 5:
			assert_int_equal(rec.type, PS_SM_REC_HASH128_DEL);
			assert_string_equal(rec.var_name, "");
			assert_int_equal(rec.keys[0], 99);
			assert_int_equal(rec.keys[1], 98);
			break;
		case 6:
			assert_int_equal(rec.type, PS_SM_REC_HASH128);
			assert_int_equal(rec.width, 1);
			assert_int_equal(rec.keys[2], k);
			assert_int_equal(rec.keys[3], 2);
			assert_true(rec.values[1] == (float)k * 100 + 1);
			break;
		}
	}
	assert_int_equal(n, 6);
	assert_int_equal(ps_sm_delta_reader_next(r, &rec), 0);
	ps_sm_delta_reader_close(r);
}

static void test_file_deltas_followed(void **state)
{
	struct ps_sm_writer_opts o = {.writer_id = 42};
	struct ps_sm_writer *w;
	struct ps_sm_follower *f;
	struct ps_sm_manifest_entry e, *all;
	char path[4400];
	size_t n;

	assert_int_equal(ps_sm_open_writer(url, &o, &w, err, sizeof(err)), 0);
	assert_int_equal(ps_sm_follower_create(ddir(), 0, &f), 0);
	assert_int_equal(ps_sm_follower_next(f, &e, path, sizeof(path), err, sizeof(err)), 0);
	/* A commit with nothing written makes no delta. */
	assert_int_equal(ps_sm_writer_commit(w), 0);
	assert_int_equal(count_files("delta-"), 0);
	for (int k = 1; k <= 3; k++) {
		write_delta(w, k);
		/* Not visible before the commit. */
		assert_int_equal(ps_sm_follower_next(f, &e, path, sizeof(path), err, sizeof(err)),
				 k == 1 ? 0 : 1);
		if (k > 1) {
			assert_int_equal(e.seq, k - 1);
			check_delta(path, k - 1, 42);
		}
		assert_int_equal(ps_sm_writer_commit(w), 0);
	}
	assert_int_equal(ps_sm_follower_next(f, &e, path, sizeof(path), err, sizeof(err)), 1);
	assert_int_equal(e.seq, 3);
	assert_string_equal(e.file, "delta-000003.psd");
	assert_int_equal(e.rows, 8);
	assert_int_equal(e.deletes, 4);
	assert_int_equal(e.writer_id, 42);
	check_delta(path, 3, 42);
	assert_int_equal(ps_sm_delta_verify(path, &e, err, sizeof(err)), 0);
	assert_int_equal(ps_sm_follower_next(f, &e, path, sizeof(path), err, sizeof(err)), 0);

	/* Writes dropped by close without commit leave no file behind. */
	write_delta(w, 4);
	assert_int_equal(count_files(".delta-"), 1);
	ps_sm_writer_close(w);
	assert_int_equal(count_files(".delta-"), 0);
	assert_int_equal(count_files("delta-"), 3);

	/* A follower started later, from seq 2. */
	ps_sm_follower_destroy(f);
	assert_int_equal(ps_sm_follower_create(ddir(), 2, &f), 0);
	assert_int_equal(ps_sm_follower_next(f, &e, path, sizeof(path), err, sizeof(err)), 1);
	assert_int_equal(e.seq, 3);
	ps_sm_follower_destroy(f);

	assert_int_equal(ps_sm_manifest_read(ddir(), &all, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_int_equal(all[0].seq, 1);
	free(all);
}

static void test_writers_share_a_folder(void **state)
{
	struct ps_sm_writer_opts o1 = {.writer_id = 1}, o2 = {.writer_id = 2};
	struct ps_sm_writer *a, *b;
	struct ps_sm_manifest_entry *all;
	struct ps_sm_batch batch = {0};
	float v[3] = {1, 2, 3};
	struct ps_sm_dense_model dm = {.var_id = 5, .width = 3, .nrows = 1, .values = v};
	size_t n;

	assert_int_equal(ps_sm_open_writer(url, &o1, &a, err, sizeof(err)), 0);
	assert_int_equal(ps_sm_open_writer(url, &o2, &b, err, sizeof(err)), 0);
	write_delta(a, 1);
	write_delta(b, 2);
	assert_int_equal(ps_sm_writer_commit(b), 0);
	assert_int_equal(ps_sm_writer_commit(a), 0);
	batch.dense = &dm;
	batch.ndense = 1;
	assert_int_equal(ps_sm_open_write_any(url, &o1, &batch, err, sizeof(err)), 0);
	assert_int_equal(ps_sm_manifest_read(ddir(), &all, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_int_equal(all[0].writer_id, 2); /* commit order */
	assert_int_equal(all[1].writer_id, 1);
	assert_int_equal(all[2].rows, 1);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(all[i].seq, i + 1);
	free(all);
	ps_sm_writer_close(a);
	ps_sm_writer_close(b);
	dm.width = 0;
	assert_int_equal(ps_sm_open_write_any(url, &o1, &batch, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "width 0"));
	assert_int_equal(ps_sm_open_write_any("zk://h:1/z", &o1, &batch, err, sizeof(err)),
			 PS_EUNSUPPORTED_SCHEME);
}

static void test_corrupt_deltas(void **state)
{
	struct ps_sm_writer *w;
	struct ps_sm_delta_reader *r;
	char good[4400], bad[4400], want[64], mpath[4400];
	struct ps_sm_manifest_entry *all;
	size_t size, n;

	assert_int_equal(ps_sm_open_writer(url, NULL, &w, err, sizeof(err)), 0);
	write_delta(w, 1);
	assert_int_equal(ps_sm_writer_commit(w), 0);
	ps_sm_writer_close(w);
	snprintf(good, sizeof(good), "%s/delta-000001.psd", ddir());
	snprintf(bad, sizeof(bad), "%s/bad.psd", dir);
	size = tm_file_size(good);
	assert_true(size > 300);
	for (size_t len = 0; len < size; len++) {
		tm_copy_file(good, bad, len);
		assert_int_equal(ps_sm_delta_reader_open(bad, &r, err, sizeof(err)), PS_ECORRUPT);
		snprintf(want, sizeof(want), "truncated at offset %zu", len);
		assert_non_null(strstr(err, want));
		assert_non_null(strstr(err, bad));
	}
	for (size_t off = 0; off < size; off += 3) {
		tm_copy_file(good, bad, SIZE_MAX);
		tm_flip_byte(bad, off, 0x08);
		assert_int_equal(ps_sm_delta_verify(bad, NULL, err, sizeof(err)), PS_ECORRUPT);
		assert_non_null(strstr(err, bad));
		assert_non_null(strstr(err, off < 4    ? "bad magic"
					    : off < 64 ? "header CRC mismatch"
						       : "content CRC mismatch"));
	}
	/* A damaged manifest is an error that names it. */
	snprintf(mpath, sizeof(mpath), "%s/manifest", ddir());
	tm_flip_byte(mpath, 20, 0x01);
	assert_int_equal(ps_sm_manifest_read(ddir(), &all, &n, err, sizeof(err)), PS_ECORRUPT);
	assert_non_null(strstr(err, mpath));
}

static int crash_child(int point)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct ps_sm_writer *w;

		ps_mio_crash_point = point;
		if (ps_sm_open_writer(url, NULL, &w, err, sizeof(err)))
			_exit(1);
		write_delta(w, 7);
		ps_sm_writer_commit(w);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_crash_during_commit(void **state)
{
	static const int points[] = {PS_MIO_CRASH_DELTA_TMP, PS_MIO_CRASH_DELTA_RENAMED,
				     PS_MIO_CRASH_MANIFEST_TMP};
	struct ps_sm_writer *w;
	struct ps_sm_manifest_entry *all;
	char path[4400];
	size_t n;

	assert_int_equal(ps_sm_open_writer(url, NULL, &w, err, sizeof(err)), 0);
	write_delta(w, 1);
	assert_int_equal(ps_sm_writer_commit(w), 0);
	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		assert_int_equal(crash_child(points[i]), PS_MIO_CRASH_EXIT);
		assert_int_equal(ps_sm_manifest_read(ddir(), &all, &n, err, sizeof(err)), 0);
		assert_int_equal(n, 1 + i); /* the crashed delta is never listed */
		free(all);
		/* The next commit takes the next number (replacing an unlisted orphan). */
		write_delta(w, (int)i + 2);
		assert_int_equal(ps_sm_writer_commit(w), 0);
		assert_int_equal(ps_sm_manifest_read(ddir(), &all, &n, err, sizeof(err)), 0);
		assert_int_equal(n, 2 + i);
		snprintf(path, sizeof(path), "%s/%s", ddir(), all[n - 1].file);
		check_delta(path, (int)i + 2, 0);
		for (size_t j = 0; j < n; j++) {
			snprintf(path, sizeof(path), "%s/%s", ddir(), all[j].file);
			assert_int_equal(ps_sm_delta_verify(path, &all[j], err, sizeof(err)), 0);
		}
		free(all);
	}
	ps_sm_writer_close(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_manager),
		cmocka_unit_test_setup_teardown(test_file_deltas_followed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writers_share_a_folder, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_deltas, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_during_commit, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
