/*
 * Command-line option parser.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <psplus/error.h>

#include "common/errbuf.h"
#include "common/options.h"

struct opt {
	struct ps_opt_spec spec;
	const char *key;     /* spec.name or long name without "--" */
	const char **values; /* given values, in order (strings point into argv) */
	size_t nvalues;
};

struct ps_opt_parser {
	struct opt *opts;
	size_t nopts, cap;
};

int ps_opt_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"True", "true", "TRUE", "1", "yes", "on"};
	static const char *const no[] = {"False", "false", "FALSE", "0", "no", "off"};

	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int ps_opt_parse_int(const char *s, int64_t *out)
{
	char *end;
	long long v;

	if (!s || !*s || *s == ' ' || *s == '\t')
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 0);
	if (end == s || *end != '\0')
		return -EINVAL;
	if (errno == ERANGE)
		return -ERANGE;
	*out = v;
	return 0;
}

int ps_opt_parser_create(struct ps_opt_parser **out)
{
	struct ps_opt_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	*out = p;
	return 0;
}

void ps_opt_parser_destroy(struct ps_opt_parser *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nopts; i++)
		free(p->opts[i].values);
	free(p->opts);
	free(p);
}

static struct opt *find_key(const struct ps_opt_parser *p, const char *key)
{
	for (size_t i = 0; i < p->nopts; i++)
		if (strcmp(p->opts[i].key, key) == 0)
			return &p->opts[i];
	return NULL;
}

/* Matches "-sp", "--scheduler_kv_path"; @len limits the compare (for "--name=value"). */
static struct opt *find_arg(const struct ps_opt_parser *p, const char *arg, size_t len)
{
	for (size_t i = 0; i < p->nopts; i++) {
		const struct ps_opt_spec *s = &p->opts[i].spec;

		if (strlen(s->long_name) == len && strncmp(s->long_name, arg, len) == 0)
			return &p->opts[i];
		if (s->short_name && strlen(s->short_name) == len &&
		    strncmp(s->short_name, arg, len) == 0)
			return &p->opts[i];
	}
	return NULL;
}

/* "--server_id (-si)" for messages. */
static const char *opt_label(const struct ps_opt_spec *s, char *buf, size_t len)
{
	if (s->short_name)
		snprintf(buf, len, "%s (%s)", s->long_name, s->short_name);
	else
		snprintf(buf, len, "%s", s->long_name);
	return buf;
}

/* Checks @v against the option's type; fills @err on failure. */
static int check_value(const struct ps_opt_spec *s, const char *v, char *err, size_t errlen)
{
	char label[128];
	int64_t iv;
	bool bv;
	int rc;

	switch (s->type) {
	case PS_OPT_STRING:
	case PS_OPT_FLAG:
		return 0;
	case PS_OPT_BOOL:
		if (ps_opt_parse_bool(v, &bv)) {
			ps_errf(err, errlen, "option %s: '%s' is not a boolean (use True or False)",
				opt_label(s, label, sizeof(label)), v);
			return PS_EBAD_OPTION;
		}
		return 0;
	case PS_OPT_INT:
		rc = ps_opt_parse_int(v, &iv);
		if (rc == -ERANGE) {
			ps_errf(err, errlen, "option %s: '%s' does not fit in a 64-bit integer",
				opt_label(s, label, sizeof(label)), v);
			return PS_EBAD_OPTION;
		}
		if (rc) {
			ps_errf(err, errlen, "option %s: '%s' is not an integer",
				opt_label(s, label, sizeof(label)), v);
			return PS_EBAD_OPTION;
		}
		if ((s->min || s->max) && (iv < s->min || iv > s->max)) {
			ps_errf(err, errlen,
				"option %s: %" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]",
				opt_label(s, label, sizeof(label)), iv, s->min, s->max);
			return PS_EBAD_OPTION;
		}
		return 0;
	}
	return -EINVAL;
}

int ps_opt_add(struct ps_opt_parser *p, const struct ps_opt_spec *spec)
{
	struct opt *o;
	const char *key;

	if (!p || !spec || !spec->long_name || strncmp(spec->long_name, "--", 2) != 0 ||
	    !spec->long_name[2])
		return -EINVAL;
	if (spec->short_name && (spec->short_name[0] != '-' || !spec->short_name[1]))
		return -EINVAL;
	key = spec->name ? spec->name : spec->long_name + 2;
	if (find_key(p, key) || find_arg(p, spec->long_name, strlen(spec->long_name)) ||
	    (spec->short_name && find_arg(p, spec->short_name, strlen(spec->short_name))))
		return -EEXIST;
	if (spec->def && check_value(spec, spec->def, NULL, 0))
		return -EINVAL;
	if (p->nopts == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		struct opt *n = realloc(p->opts, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		p->opts = n;
		p->cap = cap;
	}
	o = &p->opts[p->nopts++];
	memset(o, 0, sizeof(*o));
	o->spec = *spec;
	o->key = key;
	return 0;
}

static int push_value(struct opt *o, const char *v)
{
	const char **n;

	if (!o->spec.repeatable && o->nvalues) {
		o->values[0] = v; /* the last occurrence wins, as with getopt */
		return 0;
	}
	n = realloc(o->values, (o->nvalues + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	o->values = n;
	o->values[o->nvalues++] = v;
	return 0;
}

int ps_opt_parse(struct ps_opt_parser *p, int argc, char *const argv[], char *err, size_t errlen)
{
	char label[128];

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *eq = NULL, *val;
		size_t len;
		struct opt *o;
		int rc;

		if (arg[0] != '-' || !arg[1]) {
			ps_errf(err, errlen, "unexpected argument '%s' (options start with '-')",
				arg);
			return PS_EBAD_OPTION;
		}
		len = strlen(arg);
		if (arg[1] == '-') {
			eq = strchr(arg, '=');
			if (eq)
				len = (size_t)(eq - arg);
		}
		o = find_arg(p, arg, len);
		if (!o) {
			ps_errf(err, errlen, "unknown option '%.*s' (see --help)", (int)len, arg);
			return PS_EBAD_OPTION;
		}
		opt_label(&o->spec, label, sizeof(label));
		if (o->spec.type == PS_OPT_FLAG) {
			if (eq) {
				ps_errf(err, errlen, "option %s takes no value", label);
				return PS_EBAD_OPTION;
			}
			val = "1";
		} else if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc) {
				ps_errf(err, errlen, "option %s needs a value", label);
				return PS_EBAD_OPTION;
			}
			val = argv[++i];
		}
		rc = check_value(&o->spec, val, err, errlen);
		if (rc)
			return rc;
		rc = push_value(o, val);
		if (rc)
			return rc;
	}
	return 0;
}

int ps_opt_check_required(const struct ps_opt_parser *p, uint32_t groups, char *err, size_t errlen)
{
	char label[128];

	for (size_t i = 0; i < p->nopts; i++) {
		const struct opt *o = &p->opts[i];

		if ((o->spec.required & groups) && !o->nvalues) {
			ps_errf(err, errlen, "missing required option %s",
				opt_label(&o->spec, label, sizeof(label)));
			return PS_EBAD_OPTION;
		}
	}
	return 0;
}

bool ps_opt_is_set(const struct ps_opt_parser *p, const char *name)
{
	const struct opt *o = find_key(p, name);

	return o && o->nvalues;
}

/* The effective value: the last one given, else the default, else NULL. */
static const char *value_of(const struct opt *o)
{
	return o->nvalues ? o->values[o->nvalues - 1] : o->spec.def;
}

int ps_opt_get_str(const struct ps_opt_parser *p, const char *name, const char **out)
{
	const struct opt *o = find_key(p, name);

	if (!o)
		return -ENOENT;
	*out = value_of(o);
	return 0;
}

int ps_opt_get_int(const struct ps_opt_parser *p, const char *name, int64_t *out)
{
	const struct opt *o = find_key(p, name);
	const char *v;

	if (!o || o->spec.type != PS_OPT_INT)
		return -ENOENT;
	v = value_of(o);
	if (!v)
		return -ENODATA;
	return ps_opt_parse_int(v, out);
}

int ps_opt_get_bool(const struct ps_opt_parser *p, const char *name, bool *out)
{
	const struct opt *o = find_key(p, name);
	const char *v;

	if (!o || (o->spec.type != PS_OPT_BOOL && o->spec.type != PS_OPT_FLAG))
		return -ENOENT;
	v = value_of(o);
	if (!v) {
		if (o->spec.type == PS_OPT_FLAG) {
			*out = false;
			return 0;
		}
		return -ENODATA;
	}
	return ps_opt_parse_bool(v, out);
}

int ps_opt_get_list(const struct ps_opt_parser *p, const char *name, const char *const **vals,
		    size_t *n)
{
	const struct opt *o = find_key(p, name);

	if (!o)
		return -ENOENT;
	*vals = o->values;
	*n = o->nvalues;
	return 0;
}

void ps_opt_print_help(const struct ps_opt_parser *p, FILE *f)
{
	for (size_t i = 0; i < p->nopts; i++) {
		const struct ps_opt_spec *s = &p->opts[i].spec;
		char names[160];
		const char *mv = s->metavar		  ? s->metavar
				 : s->type == PS_OPT_INT  ? "N"
				 : s->type == PS_OPT_BOOL ? "True|False"
							  : "VALUE";

		if (s->type == PS_OPT_FLAG)
			snprintf(names, sizeof(names), "%s%s%s", s->short_name ? s->short_name : "",
				 s->short_name ? ", " : "", s->long_name);
		else
			snprintf(names, sizeof(names), "%s%s%s %s",
				 s->short_name ? s->short_name : "", s->short_name ? ", " : "",
				 s->long_name, mv);
		fprintf(f, "  %-42s %s", names, s->help ? s->help : "");
		if (s->def && *s->def)
			fprintf(f, " [default: %s]", s->def);
		if (s->repeatable)
			fprintf(f, " [repeatable]");
		fputc('\n', f);
	}
}
