/*
 * Checkpoints under a root: the index of complete checkpoints, begin / commit / remove, and
 * whole-checkpoint verification.
 *
 * The index is the only thing that makes a checkpoint exist. It is rewritten whole (temp,
 * fsync, rename, fsync of the root) under an flock() of ROOT/.lock, and only after the
 * checkpoint's part files and metadata are durable, so at every instant it names complete
 * checkpoints only, and a failed or crashed save never touches the entries (or folders) of
 * the others.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/crc32c.h"
#include "common/url.h"
#include "model_io/ckpt.h"
#include "model_io/mio_internal.h"

#define INDEX_MAGIC "psplus-checkpoints 1\n"
#define INDEX_MAX   (64u << 20)

bool ps_ckpt_name_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0;

	if (!n || n > PS_CKPT_NAME_MAX || name[0] == '.' || name[0] == '-' ||
	    !strcmp(name, "latest") || !strcmp(name, PS_CKPT_INDEX_FILE) || !strcmp(name, "end"))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

int ps_ckpt_root_path(const char *root, char *out, size_t len, char *err, size_t errlen)
{
	struct ps_url u;
	int rc;

	if (!root || !*root) {
		ps_errf(err, errlen, "empty checkpoint root");
		return PS_EBAD_URL;
	}
	if (!strstr(root, "://")) {
		if (mio_path(out, len, "%s", root)) {
			ps_errf(err, errlen, "'%s': path too long", root);
			return PS_EBAD_URL;
		}
		return 0;
	}
	rc = ps_url_parse(root, &u, err, errlen);
	if (rc)
		return rc;
	if (strcmp(u.scheme, "file")) {
		ps_errf(err, errlen, "'%s': checkpoints are read and written under file:// roots",
			root);
		return PS_EUNSUPPORTED_SCHEME;
	}
	if (mio_path(out, len, "%s", u.path)) {
		ps_errf(err, errlen, "'%s': path too long", root);
		return PS_EBAD_URL;
	}
	return 0;
}

int ps_ckpt_dir(const char *root, const char *name, char *out, size_t len)
{
	return mio_path(out, len, "%s/%s", root, name);
}

/* ---- the index file -------------------------------------------------------------------------- */

static int parse_index(const char *path, const char *s, size_t len, struct ps_ckpt_entry **out,
		       size_t *n, char *err, size_t errlen)
{
	struct ps_ckpt_entry *e = NULL;
	size_t cnt = 0, lineno = 1;
	const char *p = s, *end = s + len;

	*out = NULL;
	*n = 0;
	if (len < sizeof(INDEX_MAGIC) - 1 || memcmp(s, INDEX_MAGIC, sizeof(INDEX_MAGIC) - 1)) {
		ps_errf(err, errlen, "%s: bad magic (not a psplus checkpoint index)", path);
		return PS_ECORRUPT;
	}
	p += sizeof(INDEX_MAGIC) - 1;
	for (;;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *f[3];
		size_t fl[3];
		uint64_t num;
		uint32_t crc;

		lineno++;
		if (!nl) {
			ps_errf(err, errlen, "%s: truncated at offset %zu (line %zu unfinished)",
				path, len, lineno);
			goto bad;
		}
		if (mio_split(p, (size_t)(nl - p), f, fl, 3) != 3 ||
		    !mio_parse_dec(f[1], fl[1], &num) || !mio_parse_hex32(f[2], fl[2], &crc)) {
			ps_errf(err, errlen, "%s: malformed line %zu at offset %zu", path, lineno,
				(size_t)(p - s));
			goto bad;
		}
		if (fl[0] == 3 && !memcmp(f[0], "end", 3)) {
			uint32_t want = ps_crc32c(0, s, (size_t)(p - s));

			if (num != cnt) {
				ps_errf(err, errlen,
					"%s: the end line counts %" PRIu64
					" checkpoints, %zu are listed",
					path, num, cnt);
				goto bad;
			}
			if (crc != want) {
				ps_errf(err, errlen,
					"%s: CRC mismatch (stored 0x%08x, computed 0x%08x)", path,
					crc, want);
				goto bad;
			}
			if (nl + 1 != end) {
				ps_errf(err, errlen, "%s: %zu trailing bytes", path,
					(size_t)(end - nl - 1));
				goto bad;
			}
			*out = e;
			*n = cnt;
			return 0;
		}
		if (fl[0] > PS_CKPT_NAME_MAX) {
			ps_errf(err, errlen, "%s: line %zu: name too long", path, lineno);
			goto bad;
		}
		{
			struct ps_ckpt_entry *ne = realloc(e, (cnt + 1) * sizeof(*e));

			if (!ne) {
				free(e);
				return -ENOMEM;
			}
			e = ne;
		}
		memcpy(e[cnt].name, f[0], fl[0]);
		e[cnt].name[fl[0]] = '\0';
		if (!ps_ckpt_name_valid(e[cnt].name)) {
			ps_errf(err, errlen, "%s: line %zu: bad name", path, lineno);
			goto bad;
		}
		e[cnt].created_unix_ns = num;
		e[cnt].meta_crc = crc;
		cnt++;
		p = nl + 1;
	}
bad:
	free(e);
	return PS_ECORRUPT;
}

int ps_ckpt_list(const char *root, struct ps_ckpt_entry **out, size_t *n, char *err, size_t errlen)
{
	char path[4200];
	uint8_t *buf;
	size_t len;
	int rc;

	*out = NULL;
	*n = 0;
	if (mio_path(path, sizeof(path), "%s/%s", root, PS_CKPT_INDEX_FILE))
		return -ENAMETOOLONG;
	rc = mio_read_file(path, INDEX_MAX, &buf, &len, err, errlen);
	if (rc == -ENOENT)
		return 0; /* no checkpoint was ever committed here */
	if (rc)
		return rc;
	rc = parse_index(path, (const char *)buf, len, out, n, err, errlen);
	free(buf);
	return rc;
}

static int write_index(const char *root, const struct ps_ckpt_entry *e, size_t n, char *err,
		       size_t errlen)
{
	size_t cap = sizeof(INDEX_MAGIC) + (n + 1) * (PS_CKPT_NAME_MAX + 64), len;
	char *buf = malloc(cap);
	int rc;

	if (!buf)
		return -ENOMEM;
	len = (size_t)snprintf(buf, cap, "%s", INDEX_MAGIC);
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(buf + len, cap - len, "%s %" PRIu64 " %08x\n", e[i].name,
					e[i].created_unix_ns, e[i].meta_crc);
	len += (size_t)snprintf(buf + len, cap - len, "end %zu %08x\n", n, ps_crc32c(0, buf, len));
	rc = mio_replace_file(root, PS_CKPT_INDEX_FILE, buf, len, PS_MIO_CRASH_INDEX_TMP,
			      PS_MIO_CRASH_INDEX_RENAMED, err, errlen);
	free(buf);
	return rc;
}

static ssize_t find_entry(const struct ps_ckpt_entry *e, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(e[i].name, name))
			return (ssize_t)i;
	return -1;
}

int ps_ckpt_resolve(const char *root, const char *name, struct ps_ckpt_entry *out, char *err,
		    size_t errlen)
{
	struct ps_ckpt_entry *e;
	size_t n;
	ssize_t i;
	int rc = ps_ckpt_list(root, &e, &n, err, errlen);

	if (rc)
		return rc;
	if (!strcmp(name, "latest"))
		i = n ? (ssize_t)n - 1 : -1;
	else
		i = find_entry(e, n, name);
	if (i < 0) {
		if (!strcmp(name, "latest"))
			ps_errf(err, errlen, "no checkpoint under %s (no complete one is indexed)",
				root);
		else
			ps_errf(err, errlen, "no checkpoint '%s' under %s (%zu indexed)", name,
				root, n);
		free(e);
		return -ENOENT;
	}
	*out = e[i];
	free(e);
	return 0;
}

/* ---- saving ---------------------------------------------------------------------------------- */

int ps_ckpt_begin(const char *root, const char *name, char *dir, size_t dirlen, char *err,
		  size_t errlen)
{
	struct ps_ckpt_entry *e = NULL;
	struct stat st;
	size_t n;
	int lfd = -1, rc;

	if (!ps_ckpt_name_valid(name)) {
		ps_errf(err, errlen,
			"bad checkpoint name '%s' (1-%d of A-Z a-z 0-9 . _ -, not "
			"starting with '.' or '-', not 'latest' or 'index')",
			name ? name : "", PS_CKPT_NAME_MAX);
		return -EINVAL;
	}
	if (ps_ckpt_dir(root, name, dir, dirlen)) {
		ps_errf(err, errlen, "%s/%s: path too long", root, name);
		return -ENAMETOOLONG;
	}
	rc = mio_mkdir_p(root);
	if (rc) {
		ps_errf(err, errlen, "%s: cannot create the checkpoint root: %s", root,
			strerror(-rc));
		return rc;
	}
	rc = mio_lock_dir(root, &lfd, err, errlen);
	if (rc)
		return rc;
	rc = ps_ckpt_list(root, &e, &n, err, errlen);
	if (rc)
		goto out;
	if (find_entry(e, n, name) >= 0) {
		ps_errf(err, errlen, "checkpoint '%s' already exists under %s", name, root);
		rc = -EEXIST;
		goto out;
	}
	/* Not indexed but present: a save that crashed or was aborted. Its files are garbage. */
	if (!lstat(dir, &st) && (rc = mio_remove_dir(dir))) {
		ps_errf(err, errlen, "%s: cannot remove the leftover of an unfinished save: %s",
			dir, strerror(-rc));
		goto out;
	}
	if (mkdir(dir, 0755)) {
		rc = -errno;
		ps_errf(err, errlen, "%s: cannot create: %s", dir, strerror(-rc));
		goto out;
	}
	rc = mio_fsync_dir(root);
	if (rc)
		ps_errf(err, errlen, "%s: fsync failed: %s", root, strerror(-rc));
out:
	free(e);
	mio_unlock_dir(lfd);
	return rc;
}

static int check_part_files(const char *dir, const struct ps_ckpt_meta *m, char *err, size_t errlen)
{
	for (size_t i = 0; i < m->nvars; i++)
		for (size_t j = 0; j < m->vars[i].nparts; j++) {
			const struct ps_ckpt_part_desc *d = &m->vars[i].parts[j];
			char p[4400];
			struct stat st;

			if (mio_path(p, sizeof(p), "%s/%s", dir, d->file))
				return -ENAMETOOLONG;
			if (stat(p, &st) || !S_ISREG(st.st_mode)) {
				ps_errf(err, errlen, "%s: part file of '%s' missing", p,
					m->vars[i].name);
				return PS_ECORRUPT;
			}
			if ((uint64_t)st.st_size != d->size) {
				ps_errf(err, errlen, "%s: %lld bytes, the metadata says %" PRIu64,
					p, (long long)st.st_size, d->size);
				return PS_ECORRUPT;
			}
		}
	return 0;
}

int ps_ckpt_commit(const char *root, struct ps_ckpt_meta *m, char *err, size_t errlen)
{
	struct ps_ckpt_entry *e = NULL, *ne;
	char dir[4200];
	uint8_t *buf = NULL;
	size_t n, len;
	int lfd = -1, rc;

	rc = ps_ckpt_meta_check(m, err, errlen);
	if (rc)
		return rc;
	if (ps_ckpt_dir(root, m->name, dir, sizeof(dir)))
		return -ENAMETOOLONG;
	rc = mio_lock_dir(root, &lfd, err, errlen);
	if (rc)
		return rc;
	rc = ps_ckpt_list(root, &e, &n, err, errlen);
	if (rc)
		goto out;
	if (find_entry(e, n, m->name) >= 0) {
		ps_errf(err, errlen, "checkpoint '%s' already exists under %s", m->name, root);
		rc = -EEXIST;
		goto out;
	}
	rc = check_part_files(dir, m, err, errlen);
	if (rc)
		goto out;
	m->created_unix_ns = mio_now_ns();
	rc = ps_ckpt_meta_encode(m, &buf, &len);
	if (rc) {
		ps_errf(err, errlen, "%s: cannot encode the metadata: %s", m->name,
			ps_strerror(rc));
		goto out;
	}
	/* The folder fsync inside makes the part renames durable as well as the metadata. */
	rc = mio_replace_file(dir, PS_CKPT_META_FILE, buf, len, PS_MIO_CRASH_META_TMP,
			      PS_MIO_CRASH_META_RENAMED, err, errlen);
	if (rc)
		goto out;
	ne = realloc(e, (n + 1) * sizeof(*e));
	if (!ne) {
		rc = -ENOMEM;
		goto out;
	}
	e = ne;
	memset(&e[n], 0, sizeof(e[n]));
	snprintf(e[n].name, sizeof(e[n].name), "%s", m->name);
	e[n].created_unix_ns = m->created_unix_ns;
	e[n].meta_crc = ps_crc32c(0, buf, len);
	rc = write_index(root, e, n + 1, err, errlen);
out:
	free(buf);
	free(e);
	mio_unlock_dir(lfd);
	return rc;
}

int ps_ckpt_abort(const char *root, const char *name)
{
	char dir[4200];
	struct ps_ckpt_entry ent;

	if (!ps_ckpt_name_valid(name) || ps_ckpt_dir(root, name, dir, sizeof(dir)))
		return -EINVAL;
	/* Never remove a committed checkpoint through abort. */
	if (!ps_ckpt_resolve(root, name, &ent, NULL, 0))
		return -EEXIST;
	return mio_remove_dir(dir);
}

int ps_ckpt_remove(const char *root, const char *name, char *err, size_t errlen)
{
	struct ps_ckpt_entry *e = NULL;
	char dir[4200];
	struct stat st;
	size_t n;
	ssize_t i;
	int lfd = -1, rc;

	if (!ps_ckpt_name_valid(name) || ps_ckpt_dir(root, name, dir, sizeof(dir))) {
		ps_errf(err, errlen, "bad checkpoint name '%s'", name ? name : "");
		return -EINVAL;
	}
	rc = mio_lock_dir(root, &lfd, err, errlen);
	if (rc)
		return rc;
	rc = ps_ckpt_list(root, &e, &n, err, errlen);
	if (rc)
		goto out;
	i = find_entry(e, n, name);
	if (i >= 0) {
		memmove(&e[i], &e[i + 1], (n - (size_t)i - 1) * sizeof(*e));
		rc = write_index(root, e, n - 1, err, errlen);
		if (rc)
			goto out;
		mio_crash(PS_MIO_CRASH_REMOVE_UNLISTED);
	} else if (lstat(dir, &st)) {
		ps_errf(err, errlen, "no checkpoint '%s' under %s", name, root);
		rc = -ENOENT;
		goto out;
	}
	rc = mio_remove_dir(dir);
	if (rc == -ENOENT)
		rc = 0;
	if (rc)
		ps_errf(err, errlen, "%s: unlisted, but removing the folder failed: %s", dir,
			strerror(-rc));
	else
		mio_fsync_dir(root);
out:
	free(e);
	mio_unlock_dir(lfd);
	return rc;
}

/* ---- loading and verifying ------------------------------------------------------------------- */

static int load_meta_entry(const char *root, const struct ps_ckpt_entry *ent,
			   struct ps_ckpt_meta **out, char *err, size_t errlen)
{
	char path[4400];
	uint8_t *buf;
	size_t len;
	uint32_t crc;
	int rc;

	*out = NULL;
	if (mio_path(path, sizeof(path), "%s/%s/%s", root, ent->name, PS_CKPT_META_FILE))
		return -ENAMETOOLONG;
	rc = mio_read_file(path, PS_CKPT_META_MAX_BYTES, &buf, &len, err, errlen);
	if (rc) {
		/* Listed but unreadable: the checkpoint is damaged, not absent. */
		return rc == -ENOENT ? PS_ECORRUPT : rc;
	}
	crc = ps_crc32c(0, buf, len);
	if (crc != ent->meta_crc) {
		ps_errf(err, errlen,
			"%s: CRC mismatch with the index (index says 0x%08x, file has "
			"0x%08x)",
			path, ent->meta_crc, crc);
		free(buf);
		return PS_ECORRUPT;
	}
	rc = ps_ckpt_meta_decode(buf, len, path, out, err, errlen);
	free(buf);
	if (!rc && strcmp((*out)->name, ent->name)) {
		ps_errf(err, errlen, "%s: names checkpoint '%s', indexed as '%s'", path,
			(*out)->name, ent->name);
		ps_ckpt_meta_free(*out);
		*out = NULL;
		rc = PS_ECORRUPT;
	}
	return rc;
}

int ps_ckpt_meta_load(const char *root, const char *name, struct ps_ckpt_meta **out, char *err,
		      size_t errlen)
{
	struct ps_ckpt_entry ent;
	int rc = ps_ckpt_resolve(root, name, &ent, err, errlen);

	*out = NULL;
	return rc ? rc : load_meta_entry(root, &ent, out, err, errlen);
}

int ps_ckpt_verify(const char *root, const char *name, ps_ckpt_bad_fn bad, void *arg,
		   ps_mio_progress_fn progress, void *parg, char *err, size_t errlen)
{
	struct ps_ckpt_entry ent;
	struct ps_ckpt_meta *m;
	char msg[8192], path[4400];
	int rc, nbad = 0;

	rc = ps_ckpt_resolve(root, name, &ent, err, errlen);
	if (rc)
		return rc;
	rc = load_meta_entry(root, &ent, &m, msg, sizeof(msg));
	if (rc) {
		mio_path(path, sizeof(path), "%s/%s/%s", root, ent.name, PS_CKPT_META_FILE);
		if (bad)
			bad(arg, path, msg);
		return 1; /* without metadata the parts cannot be checked */
	}
	for (size_t i = 0; i < m->nvars; i++) {
		const struct ps_ckpt_var *v = &m->vars[i];

		for (size_t j = 0; j < v->nparts; j++) {
			if (mio_path(path, sizeof(path), "%s/%s/%s", root, ent.name,
				     v->parts[j].file)) {
				nbad++;
				continue;
			}
			rc = ps_ckpt_part_verify(path, &v->parts[j], v->id, v->spec.kind,
						 v->spec.width, v->nslots, progress, parg, msg,
						 sizeof(msg));
			if (rc) {
				nbad++;
				if (bad)
					bad(arg, path, msg);
			}
		}
	}
	ps_ckpt_meta_free(m);
	return nbad;
}
