/*
 * The control-plane connection layer (module ps_ctl): framing of protobuf-c Envelopes over TCP,
 * the socket set-up both roles share, and peer authentication.
 *
 * A frame is a 4-byte big-endian length N followed by N bytes of a packed
 * psplus.ctl.Envelope (proto/control.proto). N is checked against PS_CTL_FRAME_MAX (or a smaller
 * per-reader limit) before anything is allocated, so a hostile length prefix costs nothing. The
 * full wire description is in docs/wire.md, "Control plane".
 *
 * Errors: every function returns 0 (or 1 where noted) or a negative code:
 *   PS_EBAD_MESSAGE    malformed frame: length 0 or over the limit, protobuf decode failure,
 *                      an envelope without a body, a peer that closed in the middle of a frame
 *   PS_EPROTO_VERSION  the envelope's proto_version is not PS_CTL_PROTO_VERSION
 *   PS_EPEER_LOST      the peer closed the connection between frames (or reset it)
 *   PS_ETIMEOUT        a blocking helper ran out of time
 *   PS_ESHUTDOWN       the caller's stop_fd became readable (e.g. a signalfd) during a wait
 *   -errno             anything else from the socket calls
 * After PS_EBAD_MESSAGE, PS_EPROTO_VERSION or PS_ETIMEOUT in the middle of a frame the byte
 * stream is out of step: the caller must close the connection.
 *
 * Thread-safety: the functions keep no global state; a reader or a socket is used by one thread
 * at a time.
 */
#ifndef PS_COMMON_CTL_H
#define PS_COMMON_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/control.pb-c.h"

/* Envelope.proto_version spoken by this build. Bumped only for incompatible changes. */
#define PS_CTL_PROTO_VERSION 1u
/* Bytes of the length prefix. */
#define PS_CTL_HDR_LEN 4u
/*
 * Largest envelope (without the prefix) anyone accepts. Control messages are small; the largest
 * foreseen ones are cluster info and placement tables for thousands of servers, well under this.
 */
#define PS_CTL_FRAME_MAX (16u << 20)
/* Longest auth token accepted from a file or a peer. */
#define PS_CTL_TOKEN_MAX 4096u
/* Room for "[v6-address]:port" plus the terminator. */
#define PS_CTL_ADDR_STRLEN 300

/* A short name for the generated envelope type (protobuf-c typedefs all its messages). */
typedef Psplus__Ctl__Envelope ps_ctl_env_t;

/* ---- messages -------------------------------------------------------------------------- */

/** ps_ctl_env_init() - an empty envelope carrying PS_CTL_PROTO_VERSION and @request_id. */
void ps_ctl_env_init(ps_ctl_env_t *env, uint64_t request_id);

/**
 * ps_ctl_encode() - pack @env into a new frame (length prefix + envelope).
 * @frame: receives a malloc'ed buffer the caller frees with free().
 * @len:   receives its size in bytes (PS_CTL_HDR_LEN + the packed envelope).
 *
 * Returns 0, -EMSGSIZE when the envelope would exceed PS_CTL_FRAME_MAX, -EINVAL for a body-less
 * envelope, -ENOMEM.
 */
int ps_ctl_encode(const ps_ctl_env_t *env, uint8_t **frame, size_t *len);

/**
 * ps_ctl_decode() - unpack one envelope body (the bytes after the length prefix).
 * @out: receives an envelope the caller frees with ps_ctl_env_free().
 * @why: if not NULL, receives a one-line reason on failure (for logs).
 *
 * Returns 0, PS_EBAD_MESSAGE (protobuf decode failure, or no body), PS_EPROTO_VERSION (a
 * different proto_version, recognised even when the rest does not decode), -ENOMEM.
 */
int ps_ctl_decode(const uint8_t *buf, size_t len, ps_ctl_env_t **out, char *why, size_t whylen);

/** ps_ctl_env_free() - free an envelope from ps_ctl_decode()/ps_ctl_recv(). Accepts NULL. */
void ps_ctl_env_free(ps_ctl_env_t *env);

/** ps_ctl_body_name() - "register_req", "heartbeat", ... for logs ("none" if unset). */
const char *ps_ctl_body_name(const ps_ctl_env_t *env);

/* ---- incremental reader (non-blocking sockets, epoll loops) ---------------------------- */

/*
 * Reassembles frames from bytes as they arrive. The reader reads exactly the bytes of the
 * current frame and never past it, so it needs no spill buffer and a level-triggered epoll
 * loop can stop after any frame: two reads per frame is fine for a control plane.
 */
struct ps_ctl_reader {
	uint8_t hdr[PS_CTL_HDR_LEN]; /* the length prefix as it arrives */
	uint32_t hdr_got;	     /* bytes of hdr filled */
	uint32_t body_len;	     /* length from the prefix, valid once hdr_got == 4 */
	uint32_t body_got;	     /* bytes of body filled */
	uint8_t *body;		     /* malloc'ed after the prefix passed the limit check */
	uint32_t max_frame;	     /* limit for body_len; may be changed between frames */
	char why[160];		     /* reason for the last error, for logs */
};

/** ps_ctl_reader_init() - @max_frame 0 means PS_CTL_FRAME_MAX (larger values are clamped). */
void ps_ctl_reader_init(struct ps_ctl_reader *r, uint32_t max_frame);

/** ps_ctl_reader_fini() - free a partly read frame. The reader may be re-initialised. */
void ps_ctl_reader_fini(struct ps_ctl_reader *r);

/** ps_ctl_reader_mid_frame() - some bytes of a frame have arrived but not all. */
bool ps_ctl_reader_mid_frame(const struct ps_ctl_reader *r);

/**
 * ps_ctl_reader_feed() - hand the reader bytes from a buffer.
 * @used: receives how many of the @len bytes were consumed (it stops at the end of a frame).
 * @out:  receives the envelope when a frame completes.
 *
 * Returns 1 when a frame completed (*@out set), 0 when more bytes are needed (all consumed),
 * PS_EBAD_MESSAGE / PS_EPROTO_VERSION / -ENOMEM on error (r->why says why). After an error the
 * reader must be finalised.
 */
int ps_ctl_reader_feed(struct ps_ctl_reader *r, const uint8_t *data, size_t len, size_t *used,
		       ps_ctl_env_t **out);

/**
 * ps_ctl_reader_read_fd() - read from a non-blocking socket until a frame completes or the
 * socket has nothing more.
 *
 * Returns 1 (frame, *@out set), 0 (EAGAIN: wait for readability), PS_EPEER_LOST (orderly close
 * or reset between frames), PS_EBAD_MESSAGE (including a close in the middle of a frame),
 * PS_EPROTO_VERSION, or -errno. r->why describes errors.
 */
int ps_ctl_reader_read_fd(struct ps_ctl_reader *r, int fd, ps_ctl_env_t **out);

/* ---- blocking helpers (each bounded by a timeout) -------------------------------------- */

/**
 * ps_ctl_write_all() - write @len bytes to a socket (blocking or not) within @timeout_ms.
 * @stop_fd: a descriptor whose readability aborts the wait (a signalfd), or -1.
 *
 * Uses MSG_NOSIGNAL, so a closed peer gives PS_EPEER_LOST, never SIGPIPE.
 * Returns 0, PS_ETIMEOUT, PS_ESHUTDOWN, PS_EPEER_LOST or -errno.
 */
int ps_ctl_write_all(int fd, const void *buf, size_t len, int timeout_ms, int stop_fd);

/** ps_ctl_send() - encode @env and write the frame; as ps_ctl_write_all() plus encode errors. */
int ps_ctl_send(int fd, const ps_ctl_env_t *env, int timeout_ms, int stop_fd);

/**
 * ps_ctl_recv() - wait up to @timeout_ms for one whole frame on a non-blocking socket.
 *
 * Returns 0 (*@out set), PS_ETIMEOUT, PS_ESHUTDOWN, and the errors of ps_ctl_reader_read_fd().
 * @why (optional) receives the reason on failure.
 */
int ps_ctl_recv(int fd, int timeout_ms, int stop_fd, ps_ctl_env_t **out, char *why, size_t whylen);

/* ---- sockets --------------------------------------------------------------------------- */

/**
 * ps_ctl_connect() - TCP connect to @host:@port within @timeout_ms.
 * @out_fd: receives a non-blocking, close-on-exec socket with TCP_NODELAY set.
 *
 * Name resolution (getaddrinfo) is not covered by the timeout; numeric addresses never block.
 * Every address of @host is tried in order within the one deadline.
 * Returns 0, PS_ETIMEOUT, PS_ESHUTDOWN, -ECONNREFUSED, -EHOSTUNREACH, ... or -ENOENT for a name
 * that does not resolve.
 */
int ps_ctl_connect(const char *host, uint16_t port, int timeout_ms, int stop_fd, int *out_fd);

/**
 * ps_ctl_listen() - a non-blocking, close-on-exec TCP listening socket.
 * @host: numeric address or name to bind, "" or NULL for all IPv4 addresses.
 * @port: 0 for an ephemeral port (read it back with ps_ctl_sock_name()).
 *
 * SO_REUSEADDR is set so a restarted scheduler can rebind its port while old connections sit in
 * TIME_WAIT. Returns 0 or -errno (-EADDRINUSE, -EADDRNOTAVAIL, -ENOENT for a bad name).
 */
int ps_ctl_listen(const char *host, uint16_t port, int *out_fd);

/** ps_ctl_set_nodelay() - TCP_NODELAY: control messages are small and latency-bound. */
int ps_ctl_set_nodelay(int fd);

/**
 * ps_ctl_sock_name() - the local (@peer false) or remote address of a socket, numeric.
 * @host: at least INET6_ADDRSTRLEN bytes; @port may be NULL.
 */
int ps_ctl_sock_name(int fd, bool peer, char *host, size_t hostlen, uint16_t *port);

/** ps_ctl_addr_format() - "host:port", or "[host]:port" when host contains ':'. */
void ps_ctl_addr_format(const char *host, uint16_t port, char *buf, size_t buflen);

/**
 * ps_ctl_default_host() - an address other hosts can reach this one at: the first IPv4 address
 * of an interface that is up and not loopback, else "127.0.0.1". @host: >= 64 bytes.
 * Returns 0, or 1 when it fell back to loopback (so the caller can say so).
 */
int ps_ctl_default_host(char *host, size_t hostlen);

/* ---- authentication -------------------------------------------------------------------- */

/**
 * ps_ctl_token_load() - read a shared secret from @path (trailing newlines and spaces removed).
 * @buf: at least PS_CTL_TOKEN_MAX bytes.
 * @err: receives a message naming the file on failure.
 *
 * Returns 0, -errno from open/read, -EINVAL for an empty token, -E2BIG for one longer than
 * PS_CTL_TOKEN_MAX.
 */
int ps_ctl_token_load(const char *path, uint8_t *buf, size_t *len, char *err, size_t errlen);

/**
 * ps_ctl_token_equal() - compare two tokens in time that depends only on their lengths, not on
 * where they differ, so a remote peer cannot find the secret byte by byte through timing.
 */
bool ps_ctl_token_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

#endif
