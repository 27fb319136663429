/*
 * Logging: one line per event, with timestamp, level, component and pid, written with a single
 * write(2) so lines from threads and processes sharing stderr never interleave.
 *
 * The level comes from PSPLUS_LOG_LEVEL (error, warn, info, debug) and can be overridden by the
 * binary's --log_level option. Data-path code logs at debug only, so the default (info) is quiet
 * on the hot path.
 */
#ifndef PS_COMMON_LOG_H
#define PS_COMMON_LOG_H

#include <stdarg.h>

#include <psplus/common.h>

enum ps_log_level {
	PS_LOG_ERROR = 0,
	PS_LOG_WARN = 1,
	PS_LOG_INFO = 2,
	PS_LOG_DEBUG = 3,
};

/* The current level; read without a lock (a torn read is impossible for an int). */
extern int ps_log_level_cur;

/** ps_log_level_parse() - "error"/"warn"/"info"/"debug" (any case) to a level; -EINVAL else. */
PS_EXPORT int ps_log_level_parse(const char *s, enum ps_log_level *out);

/** ps_log_set_level() - set the level for the whole process. Thread-safe. */
PS_EXPORT void ps_log_set_level(enum ps_log_level level);

/**
 * ps_log_init_from_env() - apply PSPLUS_LOG_LEVEL if set.
 *
 * Returns 0, or -EINVAL (and leaves the level unchanged) when the variable holds an unknown
 * level, so the caller can report it.
 */
PS_EXPORT int ps_log_init_from_env(void);

/** ps_log_write() - format and write one line at @level for @component. Thread-safe. */
PS_EXPORT void ps_log_write(enum ps_log_level level, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define PS_LOG(level, comp, ...)                                    \
	do {                                                        \
		if ((int)(level) <= ps_log_level_cur)               \
			ps_log_write((level), (comp), __VA_ARGS__); \
	} while (0)

#define ps_log_err(comp, ...)	PS_LOG(PS_LOG_ERROR, comp, __VA_ARGS__)
#define ps_log_warn(comp, ...)	PS_LOG(PS_LOG_WARN, comp, __VA_ARGS__)
#define ps_log_info(comp, ...)	PS_LOG(PS_LOG_INFO, comp, __VA_ARGS__)
#define ps_log_debug(comp, ...) PS_LOG(PS_LOG_DEBUG, comp, __VA_ARGS__)

#endif
