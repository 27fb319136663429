/*
 * Checkpoints under a root: the index (list, latest, resolve, remove), whole-checkpoint verify
 * naming each bad file, commit refusals, and crash atomicity: a fork()ed child saving a second
 * checkpoint _exit()s at each step of the save (and of a remove); the parent then checks the
 * index never names an incomplete checkpoint and the previous one is intact.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "model_io/ckpt.h"
#include "model_io/mio_internal.h"
#include "tests/unit/mio_test_util.h"

static char root[512];
static char err[8192];
static struct tmodel model;

static int setup(void **state)
{
	uint64_t seed = 99;
	struct tvar *v;

	tm_tmpdir(root, sizeof(root), "ckpt-index");
	memset(&model, 0, sizeof(model));
	tm_add_var(&model, "emb", 10, PS_VAR_SPARSE, 64, 4, PS_OPTIM_ADAM, &seed);
	v = tm_add_var(&model, "ids", 11, PS_VAR_HASH128, 0, 2, PS_OPTIM_FTRL, &seed);
	tv_add_random_keys(v, 50, &seed);
	tm_add_var(&model, "bias", 12, PS_VAR_DENSE, 1, 3, PS_OPTIM_SGD, &seed);
	return 0;
}

static int teardown(void **state)
{
	tm_free(&model);
	tm_rmrf(root);
	return 0;
}

static size_t list_names(char names[][PS_CKPT_NAME_MAX + 1], size_t max)
{
	struct ps_ckpt_entry *e;
	size_t n;

	assert_int_equal(ps_ckpt_list(root, &e, &n, err, sizeof(err)), 0);
	assert_true(n <= max);
	for (size_t i = 0; i < n; i++)
		strcpy(names[i], e[i].name);
	free(e);
	return n;
}

static void assert_intact(const char *name)
{
	struct tmodel back = {0};

	assert_int_equal(ps_ckpt_verify(root, name, NULL, NULL, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(tm_load(root, name, &back), 0);
	assert_true(tm_equal(&model, &back));
	tm_free(&back);
}

static void test_list_latest_remove(void **state)
{
	char names[8][PS_CKPT_NAME_MAX + 1], dir[4200];
	struct ps_ckpt_entry e;
	struct stat st;

	assert_int_equal(list_names(names, 8), 0);
	assert_int_equal(ps_ckpt_resolve(root, "latest", &e, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, root));
	assert_int_equal(tm_save(&model, root, "step-100", 2), 0);
	assert_int_equal(tm_save(&model, root, "step-200", 3), 0);
	assert_int_equal(tm_save(&model, root, "a.first_in_alpha", 1), 0);
	assert_int_equal(list_names(names, 8), 3);
	assert_string_equal(names[0], "step-100");
	assert_string_equal(names[2], "a.first_in_alpha");
	/* latest is the last committed, not the alphabetically last. */
	assert_int_equal(ps_ckpt_resolve(root, "latest", &e, err, sizeof(err)), 0);
	assert_string_equal(e.name, "a.first_in_alpha");
	assert_int_equal(ps_ckpt_resolve(root, "nope", &e, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "no checkpoint 'nope'"));
	assert_int_equal(ps_ckpt_begin(root, "step-100", dir, sizeof(dir), err, sizeof(err)),
			 -EEXIST);
	assert_int_equal(ps_ckpt_abort(root, "step-100"), -EEXIST);
	assert_int_equal(ps_ckpt_remove(root, "step-100", err, sizeof(err)), 0);
	assert_int_equal(ps_ckpt_remove(root, "step-100", err, sizeof(err)), -ENOENT);
	ps_ckpt_dir(root, "step-100", dir, sizeof(dir));
	assert_int_equal(stat(dir, &st), -1);
	assert_int_equal(list_names(names, 8), 2);
	assert_string_equal(names[0], "step-200");
	assert_intact("step-200");
	assert_intact("latest");
	/* The name can be used again once removed. */
	assert_int_equal(tm_save(&model, root, "step-100", 2), 0);
	assert_int_equal(ps_ckpt_resolve(root, "latest", &e, err, sizeof(err)), 0);
	assert_string_equal(e.name, "step-100");
}

static void test_names(void **state)
{
	char long_name[PS_CKPT_NAME_MAX + 2];

	assert_true(ps_ckpt_name_valid("ckpt-2024.01_a"));
	assert_false(ps_ckpt_name_valid(""));
	assert_false(ps_ckpt_name_valid(NULL));
	assert_false(ps_ckpt_name_valid(".hidden"));
	assert_false(ps_ckpt_name_valid("-opt"));
	assert_false(ps_ckpt_name_valid("a/b"));
	assert_false(ps_ckpt_name_valid("a b"));
	assert_false(ps_ckpt_name_valid("latest"));
	assert_false(ps_ckpt_name_valid("index"));
	assert_false(ps_ckpt_name_valid("end"));
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_false(ps_ckpt_name_valid(long_name));
	long_name[PS_CKPT_NAME_MAX] = '\0';
	assert_true(ps_ckpt_name_valid(long_name));
}

struct bad_seen {
	int n;
	char path[4][4400];
	char what[4][1024];
};

static void on_bad(void *arg, const char *path, const char *what)
{
	struct bad_seen *b = arg;

	if (b->n < 4) {
		snprintf(b->path[b->n], sizeof(b->path[0]), "%s", path);
		snprintf(b->what[b->n], sizeof(b->what[0]), "%s", what);
	}
	b->n++;
}

static void test_verify_names_bad_files(void **state)
{
	struct ps_ckpt_meta *m;
	struct bad_seen b = {0};
	char p0[4400], p1[4400], meta[4400], idx[4400];
	struct tmodel back = {0};

	assert_int_equal(tm_save(&model, root, "v1", 2), 0);
	assert_int_equal(tm_save(&model, root, "v2", 2), 0);
	assert_int_equal(ps_ckpt_meta_load(root, "v1", &m, err, sizeof(err)), 0);
	snprintf(p0, sizeof(p0), "%s/v1/%s", root, m->vars[0].parts[0].file);
	snprintf(p1, sizeof(p1), "%s/v1/%s", root, m->vars[1].parts[1].file);
	ps_ckpt_meta_free(m);

	tm_flip_byte(p0, 100, 0x01);
	assert_int_equal(ps_ckpt_verify(root, "v1", on_bad, &b, NULL, NULL, err, sizeof(err)), 1);
	assert_string_equal(b.path[0], p0);
	assert_non_null(strstr(b.what[0], "CRC mismatch"));
	assert_non_null(strstr(b.what[0], p0));
	/* Reading refuses it too. */
	assert_int_equal(tm_load(root, "v1", &back), PS_ECORRUPT);
	tm_free(&back);

	assert_int_equal(truncate(p1, (off_t)tm_file_size(p1) - 1), 0);
	memset(&b, 0, sizeof(b));
	assert_int_equal(ps_ckpt_verify(root, "v1", on_bad, &b, NULL, NULL, err, sizeof(err)), 2);
	assert_string_equal(b.path[1], p1);
	assert_non_null(strstr(b.what[1], "truncated at offset"));
	/* The other checkpoint is untouched. */
	assert_intact("v2");

	/* Damaged metadata: the only bad file reported (parts cannot be checked without it). */
	snprintf(meta, sizeof(meta), "%s/v2/checkpoint.meta", root);
	tm_flip_byte(meta, 20, 0x80);
	memset(&b, 0, sizeof(b));
	assert_int_equal(ps_ckpt_verify(root, "v2", on_bad, &b, NULL, NULL, err, sizeof(err)), 1);
	assert_string_equal(b.path[0], meta);
	assert_non_null(strstr(b.what[0], "CRC mismatch with the index"));
	assert_int_equal(ps_ckpt_meta_load(root, "v2", &m, err, sizeof(err)), PS_ECORRUPT);

	/* A damaged index is an error naming it, not an empty list. */
	snprintf(idx, sizeof(idx), "%s/index", root);
	tm_flip_byte(idx, 25, 0x02);
	{
		struct ps_ckpt_entry *e;
		size_t n;

		assert_int_equal(ps_ckpt_list(root, &e, &n, err, sizeof(err)), PS_ECORRUPT);
		assert_non_null(strstr(err, idx));
	}
	assert_int_equal(ps_ckpt_verify(root, "v2", NULL, NULL, NULL, NULL, err, sizeof(err)),
			 PS_ECORRUPT);
}

static void test_commit_refusals(void **state)
{
	struct ps_ckpt_meta *m = ps_ckpt_meta_create("c1");
	struct ps_var_spec spec = {.kind = PS_VAR_DENSE, .rows = 2, .width = 1};
	struct ps_ckpt_part_desc d = {
		.file = "v1-0-2.psp", .begin = 0, .end = 2, .rows = 2, .size = 64 + 2 * 12};
	struct ps_ckpt_entry e;
	char dir[4200];

	spec.optim = ps_optimizer_defaults(PS_OPTIM_SGD);
	assert_int_equal(tm_save(&model, root, "ok", 1), 0);
	assert_int_equal(ps_ckpt_begin(root, "c1", dir, sizeof(dir), err, sizeof(err)), 0);
	ps_ckpt_var_add_part(ps_ckpt_meta_add_var(m, "x", 1, &spec, 0), &d);
	/* The part file was never written. */
	assert_int_equal(ps_ckpt_commit(root, m, err, sizeof(err)), PS_ECORRUPT);
	assert_non_null(strstr(err, "v1-0-2.psp"));
	assert_non_null(strstr(err, "missing"));
	assert_int_equal(ps_ckpt_resolve(root, "c1", &e, err, sizeof(err)), -ENOENT);
	assert_int_equal(ps_ckpt_resolve(root, "latest", &e, err, sizeof(err)), 0);
	assert_string_equal(e.name, "ok");
	/* Bad names never get a folder. */
	assert_int_equal(ps_ckpt_begin(root, "../up", dir, sizeof(dir), err, sizeof(err)), -EINVAL);
	assert_int_equal(ps_ckpt_abort(root, "c1"), 0);
	ps_ckpt_meta_free(m);
}

/* Runs a save of "next" (or a remove of "prev") in a child that dies at @point. */
static int crash_child(int point, bool remove)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		ps_mio_crash_point = point;
		if (remove)
			ps_ckpt_remove(root, "prev", err, sizeof(err));
		else
			tm_save(&model, root, "next", 2);
		_exit(0); /* the crash point was not reached */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_crash_during_save(void **state)
{
	static const int points[] = {
		PS_MIO_CRASH_PART_TMP,	PS_MIO_CRASH_META_TMP,	    PS_MIO_CRASH_META_RENAMED,
		PS_MIO_CRASH_INDEX_TMP, PS_MIO_CRASH_INDEX_RENAMED,
	};
	char names[8][PS_CKPT_NAME_MAX + 1];

	assert_int_equal(tm_save(&model, root, "prev", 3), 0);
	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		struct ps_ckpt_entry e;
		size_t n;

		assert_int_equal(crash_child(points[i], false), PS_MIO_CRASH_EXIT);
		n = list_names(names, 8);
		if (points[i] == PS_MIO_CRASH_INDEX_RENAMED) {
			/* Past the rename the new checkpoint exists, and it is complete. */
			assert_int_equal(n, 2);
			assert_string_equal(names[1], "next");
			assert_intact("next");
			assert_int_equal(ps_ckpt_remove(root, "next", err, sizeof(err)), 0);
		} else {
			assert_int_equal(n, 1);
			assert_string_equal(names[0], "prev");
			assert_int_equal(ps_ckpt_resolve(root, "next", &e, err, sizeof(err)),
					 -ENOENT);
			assert_int_equal(ps_ckpt_resolve(root, "latest", &e, err, sizeof(err)), 0);
			assert_string_equal(e.name, "prev");
		}
		assert_intact("prev");
	}
	/* A leftover folder of a crashed save does not stop the next save of that name. */
	assert_int_equal(crash_child(PS_MIO_CRASH_INDEX_TMP, false), PS_MIO_CRASH_EXIT);
	assert_int_equal(tm_save(&model, root, "next", 2), 0);
	assert_intact("next");
	assert_intact("prev");
}

static void test_crash_during_remove(void **state)
{
	char dir[4200];
	struct stat st;
	struct ps_ckpt_entry e;

	assert_int_equal(tm_save(&model, root, "prev", 1), 0);
	assert_int_equal(tm_save(&model, root, "keep", 1), 0);
	assert_int_equal(crash_child(PS_MIO_CRASH_REMOVE_UNLISTED, true), PS_MIO_CRASH_EXIT);
	assert_int_equal(ps_ckpt_resolve(root, "prev", &e, err, sizeof(err)), -ENOENT);
	ps_ckpt_dir(root, "prev", dir, sizeof(dir));
	assert_int_equal(stat(dir, &st), 0); /* the unlisted folder is still there */
	assert_int_equal(ps_ckpt_remove(root, "prev", err, sizeof(err)), 0);
	assert_int_equal(stat(dir, &st), -1);
	assert_intact("keep");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_list_latest_remove, setup, teardown),
		cmocka_unit_test(test_names),
		cmocka_unit_test_setup_teardown(test_verify_names_bad_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_during_save, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_during_remove, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
