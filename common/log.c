/*
 * Logging implementation.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

int ps_log_level_cur = PS_LOG_INFO;

static const char level_chars[] = {'E', 'W', 'I', 'D'};
static const char *const level_names[] = {"error", "warn", "info", "debug"};

int ps_log_level_parse(const char *s, enum ps_log_level *out)
{
	if (!s)
		return -EINVAL;
	for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum ps_log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void ps_log_set_level(enum ps_log_level level)
{
	__atomic_store_n(&ps_log_level_cur, (int)level, __ATOMIC_RELAXED);
}

int ps_log_init_from_env(void)
{
	const char *s = getenv("PSPLUS_LOG_LEVEL");
	enum ps_log_level l;

	if (!s || !*s)
		return 0;
	if (ps_log_level_parse(s, &l))
		return -EINVAL;
	ps_log_set_level(l);
	return 0;
}

void ps_log_write(enum ps_log_level level, const char *component, const char *fmt, ...)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, m;
	int saved_errno = errno;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
		     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %c %s[%d]: ", tm.tm_year + 1900,
		     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, level_chars[level & 3], component ? component : "-",
		     (int)getpid());
	if (n < 0)
		return;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2; /* truncated: keep the line ending */
	line[n++] = '\n';
	/* One write per line: atomic for pipes up to PIPE_BUF, never interleaved mid-line. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nothing sensible to do if stderr is gone */
	}
	errno = saved_errno;
}
