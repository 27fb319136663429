/*
 * Error messages into a caller's buffer (the "char *err, size_t errlen" pair of psplus calls).
 */
#ifndef PS_COMMON_ERRBUF_H
#define PS_COMMON_ERRBUF_H

#include <stddef.h>

/**
 * ps_errf() - vsnprintf @fmt into @err (@errlen bytes, always terminated); nothing when @err is
 * NULL or @errlen is 0.
 */
void ps_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
