/*
 * psplus-model: list, inspect and verify checkpoints and streaming deltas, and apply deltas to
 * a checkpoint.
 *
 *	psplus-model list ROOT
 *	psplus-model show ROOT NAME|latest
 *	psplus-model verify ROOT NAME|latest
 *	psplus-model dump ROOT NAME|latest VAR (--ids 1,2,3 | --keys K1,K2 | --keys LO:HI,...)
 *	psplus-model apply-deltas ROOT NAME|latest DELTA_DIR NEW_NAME [--after SEQ] [--upto SEQ]
 *	psplus-model deltas DELTA_DIR [--verify]
 *	psplus-model remove ROOT NAME
 *
 * ROOT and DELTA_DIR are paths or file:// URLs. Exit codes: 0 success; 1 the data is bad or an
 * operation failed (a damaged file, an I/O error, nothing to apply); 2 bad input (usage, an
 * unknown checkpoint, variable or id, a name already taken). Long operations draw a progress
 * bar on stderr when it is a terminal.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <psplus/error.h>

#include "model_io/ckpt.h"
#include "model_io/sm.h"
#include "server/optim.h"

#define EXIT_BAD_DATA  1
#define EXIT_BAD_INPUT 2

static const char usage[] =
	"usage: psplus-model COMMAND ARGS...\n"
	"\n"
	"  list ROOT                       the complete checkpoints under ROOT, oldest first\n"
	"  show ROOT NAME|latest           variables, optimizers, parts, rows and sizes\n"
	"  verify ROOT NAME|latest         check every CRC; names each bad file (exit 1)\n"
	"  dump ROOT NAME|latest VAR --ids ID,...     rows of a dense or sparse variable\n"
	"  dump ROOT NAME|latest VAR --keys KEY,...   rows of a hash variable (128-bit: LO:HI)\n"
	"  apply-deltas ROOT NAME|latest DELTA_DIR NEW_NAME [--after SEQ] [--upto SEQ]\n"
	"                                  write checkpoint NEW_NAME = NAME + the streaming\n"
	"                                  deltas after SEQ (default: NAME's last applied delta,\n"
	"                                  0 for a plain save) through --upto (default: all).\n"
	"                                  Deltas older than NAME must be excluded with --after.\n"
	"  deltas DELTA_DIR [--verify]     the complete deltas of a file:// streaming folder\n"
	"  remove ROOT NAME                drop a checkpoint from the index, then delete it\n"
	"\n"
	"ROOT and DELTA_DIR are paths or file:// URLs. VAR is a variable name or id. Numbers are\n"
	"decimal or 0x-hex. Exit status: 0 ok, 1 bad data or failed operation, 2 bad input.\n";

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("psplus-model: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(psplus-model --help for usage)\n", stderr);
	exit(EXIT_BAD_INPUT);
}

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("psplus-model: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

/* ---- progress bar --------------------------------------------------------------------------- */

struct progress {
	bool on;
	const char *what;
	uint64_t done, total;
	struct timespec last;
};

static void progress_draw(struct progress *p, bool force)
{
	struct timespec now;
	int width = 30, fill;
	double frac;

	if (!p->on)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!force && (now.tv_sec - p->last.tv_sec) * 1000000000L + now.tv_nsec - p->last.tv_nsec <
			      100000000L)
		return;
	p->last = now;
	frac = p->total ? (double)p->done / (double)p->total : 1.0;
	if (frac > 1)
		frac = 1;
	fill = (int)(frac * width);
	fprintf(stderr, "\r%s [%.*s%*s] %3d%% %.1f/%.1f MiB", p->what, fill,
		"##############################", width - fill, "", (int)(frac * 100),
		(double)p->done / 1048576.0, (double)p->total / 1048576.0);
	fflush(stderr);
}

static void progress_add(void *arg, uint64_t bytes)
{
	struct progress *p = arg;

	p->done += bytes;
	progress_draw(p, false);
}

static void progress_start(struct progress *p, const char *what, uint64_t total)
{
	memset(p, 0, sizeof(*p));
	p->on = isatty(STDERR_FILENO);
	p->what = what;
	p->total = total;
	progress_draw(p, true);
}

static void progress_end(struct progress *p)
{
	if (!p->on)
		return;
	p->done = p->total;
	progress_draw(p, true);
	fputs("\r\033[K", stderr);
	fflush(stderr);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return false;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return !errno && !*end;
}

static void root_arg(const char *arg, char *root, size_t len)
{
	char err[512];
	struct stat st;

	if (ps_ckpt_root_path(arg, root, len, err, sizeof(err)))
		die_usage("%s", err);
	if (stat(root, &st) || !S_ISDIR(st.st_mode))
		die_usage("'%s': no such directory", root);
}

static void fmt_time(uint64_t ns, char *buf, size_t len)
{
	time_t t = (time_t)(ns / 1000000000u);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (unsigned)(ns % 1000000000u / 1000000u));
}

/* Exit 2 for "not found" (the user named something that is not there), 1 for damage. */
static int code_for(int rc)
{
	return rc == -ENOENT || rc == -EINVAL || rc == -EEXIST || rc == PS_EBAD_URL ||
			       rc == PS_EUNSUPPORTED_SCHEME
		       ? EXIT_BAD_INPUT
		       : EXIT_BAD_DATA;
}

static struct ps_ckpt_meta *load_meta(const char *root, const char *name)
{
	struct ps_ckpt_meta *m;
	char err[8192];
	int rc = ps_ckpt_meta_load(root, name, &m, err, sizeof(err));

	if (rc)
		die(code_for(rc), "%s", err);
	return m;
}

static const char *slot_names(enum ps_optim_kind k)
{
	switch (k) {
	case PS_OPTIM_MOMENTUM:
	case PS_OPTIM_ADAGRAD:
		return "accum";
	case PS_OPTIM_ADAM:
		return "m v";
	case PS_OPTIM_RMSPROP:
		return "ms mom";
	case PS_OPTIM_CENTERED_RMSPROP:
		return "ms mom mg";
	case PS_OPTIM_FTRL:
		return "accum linear";
	default:
		return "";
	}
}

static void fmt_optim(const struct ps_optimizer *o, char *b, size_t n)
{
	switch (o->kind) {
	case PS_OPTIM_SGD:
		snprintf(b, n, "sgd lr=%g", o->sgd.learning_rate);
		break;
	case PS_OPTIM_MOMENTUM:
		snprintf(b, n, "momentum lr=%g momentum=%g%s", o->momentum.learning_rate,
			 o->momentum.momentum, o->momentum.use_nesterov ? " nesterov" : "");
		break;
	case PS_OPTIM_ADAGRAD:
		snprintf(b, n, "adagrad lr=%g init_accum=%g", o->adagrad.learning_rate,
			 o->adagrad.initial_accumulator_value);
		break;
	case PS_OPTIM_ADAM:
		snprintf(b, n, "adam lr=%g beta1=%g beta2=%g eps=%g%s", o->adam.learning_rate,
			 o->adam.beta1, o->adam.beta2, o->adam.epsilon,
			 o->adam.use_nesterov ? " nesterov" : "");
		break;
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_CENTERED_RMSPROP:
		snprintf(b, n, "%srmsprop lr=%g rho=%g momentum=%g eps=%g init_ms=%g",
			 o->kind == PS_OPTIM_CENTERED_RMSPROP ? "centered-" : "",
			 o->rmsprop.learning_rate, o->rmsprop.rho, o->rmsprop.momentum,
			 o->rmsprop.epsilon, o->rmsprop.initial_ms);
		break;
	case PS_OPTIM_FTRL:
		snprintf(b, n, "ftrl lr=%g power=%g l1=%g l2=%g l2_shrinkage=%g init_accum=%g",
			 o->ftrl.learning_rate, o->ftrl.learning_rate_power, o->ftrl.l1, o->ftrl.l2,
			 o->ftrl.l2_shrinkage, o->ftrl.initial_accumulator_value);
		break;
	default:
		snprintf(b, n, "unknown(%d)", (int)o->kind);
	}
}

static void fmt_init(const struct ps_initializer *i, char *b, size_t n)
{
	static const char *const names[] = {"zeros", "constant", "uniform", "normal",
					    "truncated_normal"};
	const char *name = (unsigned)i->kind < 5 ? names[i->kind] : "unknown";

	switch (i->kind) {
	case PS_INIT_CONSTANT:
		snprintf(b, n, "%s(%g)", name, i->value);
		break;
	case PS_INIT_UNIFORM:
		snprintf(b, n, "%s(%g,%g) seed=%" PRIu64, name, i->min, i->max, i->seed);
		break;
	case PS_INIT_NORMAL:
	case PS_INIT_TRUNCATED_NORMAL:
		snprintf(b, n, "%s(%g,%g) seed=%" PRIu64, name, i->mean, i->stddev, i->seed);
		break;
	default:
		snprintf(b, n, "%s", name);
	}
}

static uint64_t var_rows(const struct ps_ckpt_var *v)
{
	uint64_t r = 0;

	for (size_t j = 0; j < v->nparts; j++)
		r += v->parts[j].rows;
	return r;
}

static uint64_t var_bytes(const struct ps_ckpt_var *v)
{
	uint64_t b = 0;

	for (size_t j = 0; j < v->nparts; j++)
		b += v->parts[j].size;
	return b;
}

/* ---- list / show ---------------------------------------------------------------------------- */

static int cmd_list(int argc, char **argv)
{
	struct ps_ckpt_entry *e;
	char root[4200], err[8192], when[64];
	size_t n;
	int rc, bad = 0;

	if (argc != 1)
		die_usage("list takes ROOT");
	root_arg(argv[0], root, sizeof(root));
	rc = ps_ckpt_list(root, &e, &n, err, sizeof(err));
	if (rc)
		die(EXIT_BAD_DATA, "%s", err);
	printf("%-32s %-24s %5s %6s %14s %14s  %s\n", "NAME", "CREATED (UTC)", "VARS", "PARTS",
	       "ROWS", "BYTES", "DERIVED FROM");
	for (size_t i = 0; i < n; i++) {
		struct ps_ckpt_meta *m;
		uint64_t rows = 0, bytes = 0, parts = 0;

		fmt_time(e[i].created_unix_ns, when, sizeof(when));
		rc = ps_ckpt_meta_load(root, e[i].name, &m, err, sizeof(err));
		if (rc) {
			printf("%-32s %-24s DAMAGED: %s\n", e[i].name, when, err);
			bad++;
			continue;
		}
		for (size_t v = 0; v < m->nvars; v++) {
			rows += var_rows(&m->vars[v]);
			bytes += var_bytes(&m->vars[v]);
			parts += m->vars[v].nparts;
		}
		printf("%-32s %-24s %5zu %6" PRIu64 " %14" PRIu64 " %14" PRIu64 "  %s\n", e[i].name,
		       when, m->nvars, parts, rows, bytes, m->derived_from);
		ps_ckpt_meta_free(m);
	}
	printf("%zu checkpoint%s under %s\n", n, n == 1 ? "" : "s", root);
	free(e);
	return bad ? EXIT_BAD_DATA : 0;
}

static int cmd_show(int argc, char **argv)
{
	struct ps_ckpt_meta *m;
	char root[4200], when[64], buf[512], ibuf[256];
	uint64_t rows = 0, bytes = 0, parts = 0;

	if (argc != 2)
		die_usage("show takes ROOT NAME|latest");
	root_arg(argv[0], root, sizeof(root));
	m = load_meta(root, argv[1]);
	fmt_time(m->created_unix_ns, when, sizeof(when));
	for (size_t v = 0; v < m->nvars; v++) {
		rows += var_rows(&m->vars[v]);
		bytes += var_bytes(&m->vars[v]);
		parts += m->vars[v].nparts;
	}
	printf("checkpoint      %s\n", m->name);
	printf("created         %s\n", when);
	printf("format          %u\n", m->format_version);
	printf("cluster version 0x%016" PRIx64 "\n", m->cluster_version);
	printf("servers         %u\n", m->server_count);
	printf("placement blob  %zu bytes\n", m->placement_len);
	if (m->derived_from[0])
		printf("derived from    %s + deltas through seq %" PRIu64 "\n", m->derived_from,
		       m->last_delta_seq);
	printf("totals          %zu variables, %" PRIu64 " parts, %" PRIu64 " rows, %" PRIu64
	       " bytes\n",
	       m->nvars, parts, rows, bytes);
	for (size_t i = 0; i < m->nvars; i++) {
		const struct ps_ckpt_var *v = &m->vars[i];

		fmt_optim(&v->spec.optim, buf, sizeof(buf));
		fmt_init(&v->spec.init, ibuf, sizeof(ibuf));
		printf("\nvariable %" PRIu64 " '%s'\n", v->id, v->name);
		printf("  kind %s, width %u, %s %" PRIu64 ", %u slot%s%s%s\n",
		       ps_ckpt_kind_name(v->spec.kind), v->spec.width,
		       v->spec.kind <= PS_VAR_SPARSE ? "rows" : "live rows", var_rows(v), v->nslots,
		       v->nslots == 1 ? "" : "s", v->nslots ? ": " : "",
		       slot_names(v->spec.optim.kind));
		printf("  optimizer %s\n", buf);
		printf("  initializer %s", ibuf);
		if (v->spec.kind >= PS_VAR_HASH64 && v->spec.admit_prob > 0 &&
		    v->spec.admit_prob < 1)
			printf(", admission p=%g seed=%" PRIu64, v->spec.admit_prob,
			       v->spec.admit_seed);
		printf("\n  %-36s %-26s %12s %12s %10s %10s %12s %12s\n", "part file",
		       v->spec.kind <= PS_VAR_SPARSE ? "rows" : "buckets", "stored rows", "bytes",
		       "crc32c", "step", "beta1^t", "beta2^t");
		for (size_t j = 0; j < v->nparts; j++) {
			const struct ps_ckpt_part_desc *d = &v->parts[j];
			char range[64];

			snprintf(range, sizeof(range), "[%" PRIu64 ", %" PRIu64 ")", d->begin,
				 d->end);
			printf("  %-36s %-26s %12" PRIu64 " %12" PRIu64 "   %08x %10" PRIu64
			       " %12.6g %12.6g\n",
			       d->file, range, d->rows, d->size, d->crc32c, d->state.step,
			       d->state.beta1_power, d->state.beta2_power);
		}
	}
	ps_ckpt_meta_free(m);
	return 0;
}

/* ---- verify --------------------------------------------------------------------------------- */

static void on_bad(void *arg, const char *path, const char *what)
{
	struct progress *p = arg;

	if (p->on)
		fputs("\r\033[K", stderr);
	printf("BAD %s: %s\n", path, what);
	fflush(stdout);
}

static int cmd_verify(int argc, char **argv)
{
	struct ps_ckpt_meta *m = NULL;
	struct ps_ckpt_entry ent;
	struct progress p;
	char root[4200], err[8192];
	uint64_t total = 0;
	size_t files = 1;
	int rc;

	if (argc != 2)
		die_usage("verify takes ROOT NAME|latest");
	root_arg(argv[0], root, sizeof(root));
	rc = ps_ckpt_resolve(root, argv[1], &ent, err, sizeof(err));
	if (rc)
		die(code_for(rc), "%s", err);
	/* The sizes for the progress bar; a damaged metadata file is reported by verify. */
	if (!ps_ckpt_meta_load(root, ent.name, &m, err, sizeof(err))) {
		for (size_t v = 0; v < m->nvars; v++) {
			total += var_bytes(&m->vars[v]);
			files += m->vars[v].nparts;
		}
		ps_ckpt_meta_free(m);
	}
	progress_start(&p, "verify", total);
	rc = ps_ckpt_verify(root, ent.name, on_bad, &p, progress_add, &p, err, sizeof(err));
	progress_end(&p);
	if (rc < 0)
		die(EXIT_BAD_DATA, "%s", err);
	if (rc) {
		printf("checkpoint '%s': %d of %zu files bad\n", ent.name, rc, files);
		return EXIT_BAD_DATA;
	}
	printf("checkpoint '%s': %zu files, %" PRIu64 " bytes, every CRC good\n", ent.name, files,
	       total);
	return 0;
}

/* ---- dump ----------------------------------------------------------------------------------- */

struct want {
	uint64_t lo, hi;
	float *row; /* NULL until found */
};

static void print_row(const struct ps_ckpt_var *v, const struct want *w)
{
	const char *names = slot_names(v->spec.optim.kind);
	char slot[16];

	if (v->spec.kind == PS_VAR_HASH128)
		printf("key 0x%016" PRIx64 ":0x%016" PRIx64 ":", w->lo, w->hi);
	else if (v->spec.kind == PS_VAR_HASH64)
		printf("key %" PRIu64 ":", w->lo);
	else
		printf("row %" PRIu64 ":", w->lo);
	if (!w->row) {
		printf(" absent\n");
		return;
	}
	for (uint32_t s = 0; s <= v->nslots; s++) {
		if (!s) {
			snprintf(slot, sizeof(slot), "value");
		} else {
			/* The s-th word of the optimizer's slot names. */
			const char *p = names;

			for (uint32_t k = 1; k < s && p; k++)
				p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
			snprintf(slot, sizeof(slot), "%.*s", p ? (int)strcspn(p, " ") : 4,
				 p ? p : "slot");
		}
		printf(" %s [", slot);
		for (uint32_t c = 0; c < v->spec.width; c++)
			printf("%s%.9g", c ? ", " : "", w->row[s * v->spec.width + c]);
		printf("]");
	}
	printf("\n");
}

static void parse_list(const char *s, const struct ps_ckpt_var *v, bool keys, struct want **out,
		       size_t *n)
{
	char *copy = strdup(s), *tok, *save = NULL;
	struct want *w = NULL;
	size_t cnt = 0;

	if (!copy)
		die(EXIT_BAD_DATA, "out of memory");
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct want x = {0};
		char *colon = strchr(tok, ':');

		if (colon) {
			if (!keys || v->spec.kind != PS_VAR_HASH128)
				die_usage("'%s': LO:HI keys are for hash128 variables", tok);
			*colon = '\0';
			if (!parse_u64(tok, &x.lo) || !parse_u64(colon + 1, &x.hi))
				die_usage("'%s:%s' is not a LO:HI key", tok, colon + 1);
		} else if (!parse_u64(tok, &x.lo)) {
			die_usage("'%s' is not a number", tok);
		}
		if (!keys && x.lo >= v->spec.rows)
			die_usage("row %" PRIu64 " is out of range: '%s' has rows 0..%" PRIu64,
				  x.lo, v->name, v->spec.rows - 1);
		w = realloc(w, (cnt + 1) * sizeof(*w));
		if (!w)
			die(EXIT_BAD_DATA, "out of memory");
		w[cnt++] = x;
	}
	free(copy);
	if (!cnt)
		die_usage("no ids or keys given");
	*out = w;
	*n = cnt;
}

static int cmd_dump(int argc, char **argv)
{
	const char *ids = NULL, *keys = NULL, *pos[3];
	struct ps_ckpt_meta *m;
	struct ps_ckpt_var *v;
	struct want *w;
	char root[4200], dir[4200], path[4400], err[8192];
	size_t npos = 0, n, nf;
	uint64_t id;
	int rc = 0;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--ids") && i + 1 < argc)
			ids = argv[++i];
		else if (!strcmp(argv[i], "--keys") && i + 1 < argc)
			keys = argv[++i];
		else if (argv[i][0] == '-' && argv[i][1] == '-')
			die_usage("dump: unknown or incomplete option '%s'", argv[i]);
		else if (npos < 3)
			pos[npos++] = argv[i];
		else
			die_usage("dump: unexpected argument '%s'", argv[i]);
	}
	if (npos != 3 || !!ids == !!keys)
		die_usage("dump takes ROOT NAME|latest VAR and one of --ids or --keys");
	root_arg(pos[0], root, sizeof(root));
	m = load_meta(root, pos[1]);
	v = ps_ckpt_meta_find_var_name(m, pos[2]);
	if (!v && parse_u64(pos[2], &id))
		v = ps_ckpt_meta_find_var(m, id);
	if (!v)
		die_usage("checkpoint '%s' has no variable '%s'", m->name, pos[2]);
	if (ids && v->spec.kind > PS_VAR_SPARSE)
		die_usage("'%s' is a %s variable: use --keys", v->name,
			  ps_ckpt_kind_name(v->spec.kind));
	if (keys && v->spec.kind <= PS_VAR_SPARSE)
		die_usage("'%s' is a %s variable: use --ids", v->name,
			  ps_ckpt_kind_name(v->spec.kind));
	parse_list(ids ? ids : keys, v, !!keys, &w, &n);
	ps_ckpt_dir(root, m->name, dir, sizeof(dir));
	nf = (size_t)v->spec.width * (1u + v->nslots);
	for (size_t j = 0; j < v->nparts && !rc; j++) {
		const struct ps_ckpt_part_desc *d = &v->parts[j];
		struct ps_ckpt_part_reader_opts o = {
			.path = path, .filter_begin = d->begin, .filter_end = d->end};
		struct ps_ckpt_part_reader *r;
		struct ps_ckpt_row row;
		bool any = false;

		for (size_t i = 0; i < n; i++) {
			uint64_t x = v->spec.kind == PS_VAR_HASH64 ? ps_hash_bucket64(w[i].lo)
				     : v->spec.kind == PS_VAR_HASH128
					     ? ps_hash_bucket128(w[i].lo, w[i].hi)
					     : w[i].lo;

			any |= x >= d->begin && x < d->end;
		}
		if (!any)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, d->file);
		rc = ps_ckpt_part_reader_open(&o, &r, err, sizeof(err));
		if (rc)
			die(EXIT_BAD_DATA, "%s", err);
		while ((rc = ps_ckpt_part_reader_next(r, &row)) == 1)
			for (size_t i = 0; i < n; i++)
				if (w[i].lo == row.id && w[i].hi == row.key_hi) {
					free(w[i].row);
					w[i].row = malloc(nf * sizeof(float));
					if (!w[i].row)
						die(EXIT_BAD_DATA, "out of memory");
					memcpy(w[i].row, row.data, nf * sizeof(float));
				}
		if (rc)
			die(EXIT_BAD_DATA, "%s", ps_ckpt_part_reader_errmsg(r));
		ps_ckpt_part_reader_close(r);
	}
	printf("# checkpoint '%s', variable %" PRIu64 " '%s': %s, width %u, slots %u%s%s\n",
	       m->name, v->id, v->name, ps_ckpt_kind_name(v->spec.kind), v->spec.width, v->nslots,
	       v->nslots ? ": " : "", slot_names(v->spec.optim.kind));
	for (size_t i = 0; i < n; i++) {
		print_row(v, &w[i]);
		free(w[i].row);
	}
	free(w);
	ps_ckpt_meta_free(m);
	return 0;
}

/* ---- apply-deltas, deltas, remove ----------------------------------------------------------- */

static void init_slots(void *arg, const struct ps_optimizer *o, float *row, uint32_t width)
{
	ps_optim_init_slots(o, row, width);
}

static int cmd_apply(int argc, char **argv)
{
	struct ps_ckpt_apply_opts o = {.after_seq = UINT64_MAX, .init_slots = init_slots};
	struct ps_ckpt_apply_stats st;
	struct ps_ckpt_entry ent;
	struct progress p;
	const char *pos[4];
	char root[4200], ddir[4200], err[8192];
	struct stat sb;
	size_t npos = 0;
	int rc;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--after") && i + 1 < argc) {
			if (!parse_u64(argv[++i], &o.after_seq) || o.after_seq == UINT64_MAX)
				die_usage("--after: '%s' is not a sequence number", argv[i]);
		} else if (!strcmp(argv[i], "--upto") && i + 1 < argc) {
			if (!parse_u64(argv[++i], &o.upto_seq) || !o.upto_seq)
				die_usage("--upto: '%s' is not a sequence number >= 1", argv[i]);
		} else if (argv[i][0] == '-' && argv[i][1] == '-') {
			die_usage("apply-deltas: unknown or incomplete option '%s'", argv[i]);
		} else if (npos < 4) {
			pos[npos++] = argv[i];
		} else {
			die_usage("apply-deltas: unexpected argument '%s'", argv[i]);
		}
	}
	if (npos != 4)
		die_usage("apply-deltas takes ROOT NAME|latest DELTA_DIR NEW_NAME");
	root_arg(pos[0], root, sizeof(root));
	if (ps_ckpt_root_path(pos[2], ddir, sizeof(ddir), err, sizeof(err)))
		die_usage("%s", err);
	if (stat(ddir, &sb) || !S_ISDIR(sb.st_mode))
		die_usage("'%s': no such directory", ddir);
	if (!ps_ckpt_name_valid(pos[3]))
		die_usage("'%s' is not a valid checkpoint name (1-%d of A-Z a-z 0-9 . _ -, not "
			  "starting with '.' or '-', not latest/index/end)",
			  pos[3], PS_CKPT_NAME_MAX);
	rc = ps_ckpt_resolve(root, pos[1], &ent, err, sizeof(err));
	if (rc)
		die(code_for(rc), "%s", err);
	if (!ps_ckpt_resolve(root, pos[3], &(struct ps_ckpt_entry){0}, NULL, 0))
		die_usage("checkpoint '%s' already exists under %s", pos[3], root);
	o.root = root;
	o.base = ent.name;
	o.delta_dir = ddir;
	o.new_name = pos[3];
	{
		/* The total for the bar: the base's part files and the listed deltas. */
		struct ps_ckpt_meta *m;
		struct ps_sm_manifest_entry *all;
		uint64_t total = 0;
		size_t nd;

		if (!ps_ckpt_meta_load(root, ent.name, &m, NULL, 0)) {
			for (size_t v = 0; v < m->nvars; v++)
				total += var_bytes(&m->vars[v]);
			ps_ckpt_meta_free(m);
		}
		if (!ps_sm_manifest_read(ddir, &all, &nd, NULL, 0)) {
			for (size_t i = 0; i < nd; i++)
				total += all[i].size;
			free(all);
		}
		progress_start(&p, "apply-deltas", total);
	}
	o.progress = progress_add;
	o.parg = &p;
	rc = ps_ckpt_apply_deltas(&o, &st, err, sizeof(err));
	progress_end(&p);
	if (rc)
		die(rc == -EEXIST ? EXIT_BAD_INPUT : EXIT_BAD_DATA, "%s", err);
	printf("checkpoint '%s' = '%s' + deltas %" PRIu64 "..%" PRIu64 " (%" PRIu64
	       " files): %" PRIu64 " rows replaced, %" PRIu64 " inserted, %" PRIu64
	       " deleted, %" PRIu64 " deletions of absent keys\n",
	       o.new_name, ent.name, st.first_seq, st.last_seq, st.deltas, st.rows_replaced,
	       st.rows_inserted, st.keys_deleted, st.deletes_absent);
	return 0;
}

static int cmd_deltas(int argc, char **argv)
{
	struct ps_sm_manifest_entry *e;
	char dir[4200], err[8192], path[4400], when[64];
	bool verify = false;
	const char *d = NULL;
	size_t n;
	int bad = 0, rc;
	struct stat sb;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--verify"))
			verify = true;
		else if (argv[i][0] == '-' && argv[i][1] == '-')
			die_usage("deltas: unknown option '%s'", argv[i]);
		else if (!d)
			d = argv[i];
		else
			die_usage("deltas: unexpected argument '%s'", argv[i]);
	}
	if (!d)
		die_usage("deltas takes DELTA_DIR [--verify]");
	if (ps_ckpt_root_path(d, dir, sizeof(dir), err, sizeof(err)))
		die_usage("%s", err);
	if (stat(dir, &sb) || !S_ISDIR(sb.st_mode))
		die_usage("'%s': no such directory", dir);
	rc = ps_sm_manifest_read(dir, &e, &n, err, sizeof(err));
	if (rc)
		die(EXIT_BAD_DATA, "%s", err);
	printf("%8s  %-20s %12s %10s %10s %8s  %s\n", "SEQ", "FILE", "BYTES", "ROWS", "DELETES",
	       "WRITER", "CREATED (UTC)");
	for (size_t i = 0; i < n; i++) {
		fmt_time(e[i].created_unix_ns, when, sizeof(when));
		printf("%8" PRIu64 "  %-20s %12" PRIu64 " %10" PRIu64 " %10" PRIu64 " %8" PRIu64
		       "  %s\n",
		       e[i].seq, e[i].file, e[i].size, e[i].rows, e[i].deletes, e[i].writer_id,
		       when);
		if (!verify)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e[i].file);
		if (ps_sm_delta_verify(path, &e[i], err, sizeof(err))) {
			printf("BAD %s\n", err);
			bad++;
		}
	}
	printf("%zu delta%s in %s%s\n", n, n == 1 ? "" : "s", dir,
	       !verify ? ""
	       : bad   ? ", some bad"
		       : ", every CRC good");
	free(e);
	return bad ? EXIT_BAD_DATA : 0;
}

static int cmd_remove(int argc, char **argv)
{
	char root[4200], err[8192];
	int rc;

	if (argc != 2)
		die_usage("remove takes ROOT NAME");
	root_arg(argv[0], root, sizeof(root));
	if (!ps_ckpt_name_valid(argv[1]))
		die_usage("'%s' is not a checkpoint name (remove takes a name, not 'latest')",
			  argv[1]);
	rc = ps_ckpt_remove(root, argv[1], err, sizeof(err));
	if (rc)
		die(code_for(rc), "%s", err);
	printf("removed checkpoint '%s'\n", argv[1]);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{"list", cmd_list},	{"show", cmd_show},	     {"verify", cmd_verify},
		{"dump", cmd_dump},	{"apply-deltas", cmd_apply}, {"deltas", cmd_deltas},
		{"remove", cmd_remove},
	};

	if (argc < 2)
		die_usage("no command");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("psplus-model %s (checkpoint format %d, delta format %d)\n",
		       PS_VERSION_STRING, PS_CKPT_FORMAT_VERSION, PS_SM_DELTA_FORMAT);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 2, argv + 2);
	die_usage("unknown command '%s'", argv[1]);
}
