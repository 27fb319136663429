/*
 * psplus error codes.
 *
 * Every fallible psplus function returns 0 on success or a negative code on failure. A code is
 * either a negative errno value (-ENOMEM, -EINVAL, ...) or one of the project codes below, which
 * sit outside errno's range (below PS_ERR_BASE) so the two never collide. ps_strerror() turns any
 * of them into text.
 */
#ifndef PSPLUS_ERROR_H
#define PSPLUS_ERROR_H

#include <psplus/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Project codes start here and count down; errno values on Linux stay below 4096. */
#define PS_ERR_BASE (-10000)

/*
 * X-macro table of project codes: XX(NAME, offset, message). The code is PS_ERR_BASE - offset.
 * Offsets are part of the wire protocol (status fields carry them): never renumber.
 */
#define PS_ERRNO_MAP(XX)                                                 \
	XX(STALE_VERSION, 1, "request carries a stale cluster version")  \
	XX(PEER_LOST, 2, "peer lost")                                    \
	XX(NOT_READY, 3, "not ready")                                    \
	XX(PROTO_VERSION, 4, "unsupported protocol version")             \
	XX(BAD_MESSAGE, 5, "malformed or truncated message")             \
	XX(DUP_SERVER_ID, 6, "server id already registered and live")    \
	XX(OP_IN_PROGRESS, 7, "another save or restore is in progress")  \
	XX(UNKNOWN_VAR, 8, "unknown variable")                           \
	XX(CORRUPT, 9, "corrupt data (checksum or format mismatch)")     \
	XX(OVER_BUDGET, 10, "placement does not fit the server budgets") \
	XX(BAD_OPTION, 11, "invalid command-line option")                \
	XX(BAD_URL, 12, "invalid URL")                                   \
	XX(NO_DEVICE, 13, "no active RDMA device")                       \
	XX(PLUGIN, 14, "plugin failed to load or register")              \
	XX(TIMEOUT, 15, "operation timed out")                           \
	XX(SHUTDOWN, 16, "shutting down")                                \
	XX(UNSUPPORTED_SCHEME, 17, "unsupported URL scheme")             \
	XX(OUT_OF_RANGE, 18, "id out of range")

enum ps_err {
#define PS_ERR_ENUM(name, off, msg) PS_E##name = PS_ERR_BASE - (off),
	PS_ERRNO_MAP(PS_ERR_ENUM)
#undef PS_ERR_ENUM
};

/**
 * ps_strerror() - text for any psplus return code.
 * @err: 0, a negative errno value or a PS_E* code (a positive errno is accepted too).
 *
 * Returns a static string (never NULL). Thread-safe.
 */
PS_EXPORT const char *ps_strerror(int err);

/**
 * ps_err_name() - the symbolic name of a code ("ENOMEM", "PS_ESTALE_VERSION", "OK").
 *
 * Returns a static string (never NULL); "UNKNOWN" for codes it does not know. Thread-safe.
 */
PS_EXPORT const char *ps_err_name(int err);

#ifdef __cplusplus
}
#endif

#endif
