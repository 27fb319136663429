/*
 * Clocks and deadlines. All waits in psplus take a deadline from the monotonic clock, so a
 * wall-clock step never stretches or shortens a timeout.
 */
#ifndef PS_COMMON_CLOCK_H
#define PS_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

#define PS_NSEC_PER_SEC	 1000000000ull
#define PS_NSEC_PER_MSEC 1000000ull

/** ps_clock_now_ns() - monotonic time in nanoseconds. */
static inline uint64_t ps_clock_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * PS_NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/** ps_clock_now_ms() - monotonic time in milliseconds. */
static inline uint64_t ps_clock_now_ms(void)
{
	return ps_clock_now_ns() / PS_NSEC_PER_MSEC;
}

/**
 * ps_clock_coarse_ms() - monotonic time in milliseconds at the kernel tick's resolution
 * (CLOCK_MONOTONIC_COARSE: a few ns to read, up to a tick behind). For cadences on hot paths,
 * never for deadlines.
 */
static inline uint64_t ps_clock_coarse_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / PS_NSEC_PER_MSEC;
}

/** ps_clock_deadline_ms() - the monotonic time @ms milliseconds from now, in ns. */
static inline uint64_t ps_clock_deadline_ms(uint64_t ms)
{
	return ps_clock_now_ns() + ms * PS_NSEC_PER_MSEC;
}

/**
 * ps_clock_remaining_ms() - milliseconds left until @deadline_ns (0 if passed), clamped to
 * INT32_MAX so it can be handed to poll(2)/epoll_wait(2).
 */
static inline int ps_clock_remaining_ms(uint64_t deadline_ns)
{
	uint64_t now = ps_clock_now_ns();
	uint64_t ms;

	if (now >= deadline_ns)
		return 0;
	ms = (deadline_ns - now + PS_NSEC_PER_MSEC - 1) / PS_NSEC_PER_MSEC;
	return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/** ps_clock_abs_timespec() - CLOCK_MONOTONIC timespec for a deadline (pthread_cond_clockwait). */
static inline struct timespec ps_clock_timespec(uint64_t ns)
{
	struct timespec ts = {.tv_sec = (time_t)(ns / PS_NSEC_PER_SEC),
			      .tv_nsec = (long)(ns % PS_NSEC_PER_SEC)};
	return ts;
}

#endif
