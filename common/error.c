/*
 * The error table: project codes and errno values to text.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <psplus/error.h>

#include "common/errbuf.h"

const char *ps_strerror(int err)
{
	const char *s;

	if (err == 0)
		return "success";
	switch (err) {
#define PS_ERR_MSG(name, off, msg) \
	case PS_E##name:           \
		return msg;
		PS_ERRNO_MAP(PS_ERR_MSG)
#undef PS_ERR_MSG
	default:
		break;
	}
	if (err < 0)
		err = -err;
	/* strerrordesc_np() is thread-safe and never localised, unlike strerror(). */
	s = strerrordesc_np(err);
	return s ? s : "unknown error";
}

const char *ps_err_name(int err)
{
	const char *s;

	if (err == 0)
		return "OK";
	switch (err) {
#define PS_ERR_NAME(name, off, msg) \
	case PS_E##name:            \
		return "PS_E" #name;
		PS_ERRNO_MAP(PS_ERR_NAME)
#undef PS_ERR_NAME
	default:
		break;
	}
	if (err < 0)
		err = -err;
	s = strerrorname_np(err);
	return s ? s : "UNKNOWN";
}

void ps_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}
