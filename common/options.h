/*
 * The command-line option parser (the seed's OptionParser: addOption / parseArgs /
 * getOptionValue).
 *
 * Options have a short name ("-sp") and a long name ("--scheduler_kv_path"), both taking their
 * value as the next argument or after '=' ("--server_id=3"). Types are string, integer (with an
 * inclusive range), bool ("True"/"False", "true"/"false", "1"/"0", "yes"/"no"), and flag (no
 * value, e.g. --help). Unlike the seed, unknown options, missing values, malformed numbers and
 * out-of-range values are errors, and every error message names the option.
 *
 * Required-ness is a bit mask so one parser can serve several roles: the caller parses once,
 * then checks the options required for the role it chose (ps_opt_check_required()).
 *
 * Not thread-safe: a parser is built and read by one thread.
 */
#ifndef PS_COMMON_OPTIONS_H
#define PS_COMMON_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <psplus/common.h>

enum ps_opt_type {
	PS_OPT_STRING,
	PS_OPT_INT,
	PS_OPT_BOOL,
	PS_OPT_FLAG,
};

struct ps_opt_spec {
	const char *short_name; /* "-sp", or NULL */
	const char *long_name;	/* "--scheduler_kv_path" (required) */
	const char *name;	/* key for ps_opt_get_*(); NULL: long name without "--" */
	enum ps_opt_type type;
	uint32_t required;   /* mask of the groups (roles) that require it; 0: optional */
	const char *def;     /* default value as text, or NULL for none */
	int64_t min, max;    /* PS_OPT_INT: inclusive range; both 0 means any int64 */
	bool repeatable;     /* may be given more than once (values collected in order) */
	const char *metavar; /* shown in --help, e.g. "URL" */
	const char *help;    /* one line for --help */
};

struct ps_opt_parser;

/** ps_opt_parser_create() - an empty parser. Returns 0 or -ENOMEM. */
PS_EXPORT int ps_opt_parser_create(struct ps_opt_parser **out);

/** ps_opt_parser_destroy() - free the parser and every value. Accepts NULL. */
PS_EXPORT void ps_opt_parser_destroy(struct ps_opt_parser *p);

/**
 * ps_opt_add() - addOption. @spec's strings are borrowed and must outlive the parser.
 *
 * Returns 0, -EINVAL for a spec without a long name or a default that does not parse as its
 * type, -EEXIST for a name used twice, -ENOMEM.
 */
PS_EXPORT int ps_opt_add(struct ps_opt_parser *p, const struct ps_opt_spec *spec);

/**
 * ps_opt_parse() - parseArgs: parse argv[1..argc-1].
 * @err: receives a message naming the offending option when parsing fails.
 *
 * Positional arguments are not accepted. Returns 0, or PS_EBAD_OPTION with @err filled, or
 * -ENOMEM.
 */
PS_EXPORT int ps_opt_parse(struct ps_opt_parser *p, int argc, char *const argv[], char *err,
			   size_t errlen);

/**
 * ps_opt_check_required() - every option whose required mask intersects @groups was given.
 *
 * Returns 0 or PS_EBAD_OPTION with @err naming the first missing option.
 */
PS_EXPORT int ps_opt_check_required(const struct ps_opt_parser *p, uint32_t groups, char *err,
				    size_t errlen);

/** ps_opt_is_set() - the option was given on the command line (not merely defaulted). */
PS_EXPORT bool ps_opt_is_set(const struct ps_opt_parser *p, const char *name);

/**
 * ps_opt_get_str() - getOptionValue for strings (any type's text form works).
 *
 * *@out is borrowed from the parser; NULL when neither given nor defaulted.
 * Returns 0 or -ENOENT for an unknown name.
 */
PS_EXPORT int ps_opt_get_str(const struct ps_opt_parser *p, const char *name, const char **out);

/** ps_opt_get_int() - value of a PS_OPT_INT option. -ENOENT unknown, -ENODATA unset. */
PS_EXPORT int ps_opt_get_int(const struct ps_opt_parser *p, const char *name, int64_t *out);

/** ps_opt_get_bool() - value of a PS_OPT_BOOL or PS_OPT_FLAG option (flag: false if unset). */
PS_EXPORT int ps_opt_get_bool(const struct ps_opt_parser *p, const char *name, bool *out);

/**
 * ps_opt_get_list() - all values of a repeatable option, in command-line order.
 * *@vals is borrowed; *@n may be 0. Returns 0 or -ENOENT.
 */
PS_EXPORT int ps_opt_get_list(const struct ps_opt_parser *p, const char *name,
			      const char *const **vals, size_t *n);

/** ps_opt_print_help() - one line per option: names, metavar, default, required, help. */
PS_EXPORT void ps_opt_print_help(const struct ps_opt_parser *p, FILE *f);

/**
 * ps_opt_parse_bool() - "True"/"False" and friends to bool. Returns 0 or -EINVAL.
 * ps_opt_parse_int() - a whole decimal (or 0x hex) int64 with nothing after it. 0, -EINVAL,
 * -ERANGE.
 */
PS_EXPORT int ps_opt_parse_bool(const char *s, bool *out);
PS_EXPORT int ps_opt_parse_int(const char *s, int64_t *out);

#endif
