/*
 * Control-plane framing: envelopes to length-prefixed frames and back, an incremental reader for
 * event loops, and blocking send/receive helpers bounded by timeouts.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/ctl.h"
#include "common/errbuf.h"

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void ps_ctl_env_init(ps_ctl_env_t *env, uint64_t request_id)
{
	psplus__ctl__envelope__init(env);
	env->proto_version = PS_CTL_PROTO_VERSION;
	env->request_id = request_id;
}

int ps_ctl_encode(const ps_ctl_env_t *env, uint8_t **frame, size_t *len)
{
	size_t n;
	uint8_t *buf;

	if (env->body_case == PSPLUS__CTL__ENVELOPE__BODY__NOT_SET)
		return -EINVAL;
	n = psplus__ctl__envelope__get_packed_size(env);
	if (n > PS_CTL_FRAME_MAX)
		return -EMSGSIZE;
	buf = malloc(PS_CTL_HDR_LEN + n);
	if (!buf)
		return -ENOMEM;
	put_be32(buf, (uint32_t)n);
	if (psplus__ctl__envelope__pack(env, buf + PS_CTL_HDR_LEN) != n) {
		free(buf);
		return -EINVAL;
	}
	*frame = buf;
	*len = PS_CTL_HDR_LEN + n;
	return 0;
}

/*
 * proto_version is field 1 and protobuf-c packs fields in number order, so when it is present it
 * is the first key (0x08: field 1, varint). Reading it by hand lets a peer speaking another
 * version be told so even when the rest of its envelope does not decode as ours.
 */
static bool peek_version(const uint8_t *buf, size_t len, uint32_t *ver)
{
	uint64_t v = 0;

	if (len < 2 || buf[0] != 0x08)
		return false;
	for (size_t i = 1; i < len && i < 11; i++) {
		v |= (uint64_t)(buf[i] & 0x7f) << (7 * (i - 1));
		if (!(buf[i] & 0x80)) {
			*ver = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
			return true;
		}
	}
	return false;
}

int ps_ctl_decode(const uint8_t *buf, size_t len, ps_ctl_env_t **out, char *why, size_t whylen)
{
	ps_ctl_env_t *env;
	uint32_t ver;

	*out = NULL;
	env = psplus__ctl__envelope__unpack(NULL, len, buf);
	if (!env) {
		if (peek_version(buf, len, &ver) && ver != PS_CTL_PROTO_VERSION) {
			ps_errf(why, whylen, "proto_version %u, this build speaks %u", ver,
				PS_CTL_PROTO_VERSION);
			return PS_EPROTO_VERSION;
		}
		ps_errf(why, whylen, "%zu-byte envelope does not decode", len);
		return PS_EBAD_MESSAGE;
	}
	if (env->proto_version != PS_CTL_PROTO_VERSION) {
		ps_errf(why, whylen, "proto_version %u, this build speaks %u", env->proto_version,
			PS_CTL_PROTO_VERSION);
		psplus__ctl__envelope__free_unpacked(env, NULL);
		return PS_EPROTO_VERSION;
	}
	/* Same version but no body we know: a sender of our version never produces that. */
	if (env->body_case == PSPLUS__CTL__ENVELOPE__BODY__NOT_SET) {
		ps_errf(why, whylen, "envelope without a body");
		psplus__ctl__envelope__free_unpacked(env, NULL);
		return PS_EBAD_MESSAGE;
	}
	*out = env;
	return 0;
}

void ps_ctl_env_free(ps_ctl_env_t *env)
{
	if (env)
		psplus__ctl__envelope__free_unpacked(env, NULL);
}

/*
 * The body's name is the name of its oneof field in proto/control.proto ("register_req",
 * "declare_resp", ...): body_case is that field's number, so the generated descriptor names
 * every message, including any added later, with no list here to fall behind.
 */
const char *ps_ctl_body_name(const ps_ctl_env_t *env)
{
	const ProtobufCFieldDescriptor *f;

	if (!env || env->body_case == PSPLUS__CTL__ENVELOPE__BODY__NOT_SET)
		return "none";
	f = protobuf_c_message_descriptor_get_field(&psplus__ctl__envelope__descriptor,
						    (unsigned)env->body_case);
	/* A value that names no field, or a field outside the oneof, is not a body. */
	return f && (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ? f->name : "none";
}

/* ---- incremental reader ---------------------------------------------------------------- */

void ps_ctl_reader_init(struct ps_ctl_reader *r, uint32_t max_frame)
{
	memset(r, 0, sizeof(*r));
	r->max_frame = max_frame && max_frame < PS_CTL_FRAME_MAX ? max_frame : PS_CTL_FRAME_MAX;
}

void ps_ctl_reader_fini(struct ps_ctl_reader *r)
{
	free(r->body);
	r->body = NULL;
	r->hdr_got = r->body_len = r->body_got = 0;
}

bool ps_ctl_reader_mid_frame(const struct ps_ctl_reader *r)
{
	return r->hdr_got > 0;
}

/* The prefix is complete: check it before allocating anything. */
static int reader_start_body(struct ps_ctl_reader *r)
{
	r->body_len = get_be32(r->hdr);
	if (r->body_len == 0) {
		ps_errf(r->why, sizeof(r->why), "zero-length frame");
		return PS_EBAD_MESSAGE;
	}
	if (r->body_len > r->max_frame) {
		ps_errf(r->why, sizeof(r->why), "frame length %u exceeds the limit of %u bytes",
			r->body_len, r->max_frame);
		return PS_EBAD_MESSAGE;
	}
	r->body = malloc(r->body_len);
	if (!r->body) {
		ps_errf(r->why, sizeof(r->why), "out of memory for a %u-byte frame", r->body_len);
		return -ENOMEM;
	}
	r->body_got = 0;
	return 0;
}

/* The body is complete: decode it and make the reader ready for the next frame. */
static int reader_finish(struct ps_ctl_reader *r, ps_ctl_env_t **out)
{
	int rc = ps_ctl_decode(r->body, r->body_len, out, r->why, sizeof(r->why));

	ps_ctl_reader_fini(r);
	return rc ? rc : 1;
}

int ps_ctl_reader_feed(struct ps_ctl_reader *r, const uint8_t *data, size_t len, size_t *used,
		       ps_ctl_env_t **out)
{
	size_t off = 0, n;
	int rc = 0;

	*out = NULL;
	while (off < len) {
		if (r->hdr_got < PS_CTL_HDR_LEN) {
			n = PS_CTL_HDR_LEN - r->hdr_got;
			n = n < len - off ? n : len - off;
			memcpy(r->hdr + r->hdr_got, data + off, n);
			r->hdr_got += (uint32_t)n;
			off += n;
			if (r->hdr_got == PS_CTL_HDR_LEN && (rc = reader_start_body(r)))
				break;
			continue;
		}
		n = r->body_len - r->body_got;
		n = n < len - off ? n : len - off;
		memcpy(r->body + r->body_got, data + off, n);
		r->body_got += (uint32_t)n;
		off += n;
		if (r->body_got == r->body_len) {
			rc = reader_finish(r, out);
			break;
		}
	}
	*used = off;
	return rc;
}

int ps_ctl_reader_read_fd(struct ps_ctl_reader *r, int fd, ps_ctl_env_t **out)
{
	uint8_t *dst;
	size_t want;
	ssize_t n;
	int rc;

	*out = NULL;
	for (;;) {
		if (r->hdr_got < PS_CTL_HDR_LEN) {
			dst = r->hdr + r->hdr_got;
			want = PS_CTL_HDR_LEN - r->hdr_got;
		} else {
			dst = r->body + r->body_got;
			want = r->body_len - r->body_got;
		}
		/* MSG_DONTWAIT: the caller's poll/epoll decides when to wait, never this read. */
		n = recv(fd, dst, want, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno != ECONNRESET && errno != EPIPE) {
				rc = -errno;
				ps_errf(r->why, sizeof(r->why), "recv: %s", strerror(-rc));
				return rc;
			}
			n = 0; /* a reset is a close without the courtesy */
		}
		if (n == 0) {
			if (!ps_ctl_reader_mid_frame(r)) {
				ps_errf(r->why, sizeof(r->why), "connection closed by peer");
				return PS_EPEER_LOST;
			}
			if (r->hdr_got < PS_CTL_HDR_LEN)
				ps_errf(r->why, sizeof(r->why),
					"truncated frame: closed after %u of %u prefix bytes",
					r->hdr_got, PS_CTL_HDR_LEN);
			else
				ps_errf(r->why, sizeof(r->why),
					"truncated frame: closed after %u of %u bytes", r->body_got,
					r->body_len);
			return PS_EBAD_MESSAGE;
		}
		if (r->hdr_got < PS_CTL_HDR_LEN) {
			r->hdr_got += (uint32_t)n;
			if (r->hdr_got == PS_CTL_HDR_LEN && (rc = reader_start_body(r)))
				return rc;
		} else {
			r->body_got += (uint32_t)n;
			if (r->body_got == r->body_len)
				return reader_finish(r, out);
		}
	}
}

/* ---- blocking helpers ------------------------------------------------------------------ */

/* Wait for @events on @fd or readability of @stop_fd until @deadline. 0 when @fd is ready. */
static int wait_fd(int fd, short events, int stop_fd, uint64_t deadline)
{
	struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = stop_fd, .events = POLLIN}};
	int n;

	for (;;) {
		n = poll(p, stop_fd >= 0 ? 2 : 1, ps_clock_remaining_ms(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return PS_ETIMEOUT;
		if (stop_fd >= 0 && p[1].revents)
			return PS_ESHUTDOWN;
		/* POLLERR/POLLHUP: let the following call report the socket's own error. */
		return 0;
	}
}

int ps_ctl_write_all(int fd, const void *buf, size_t len, int timeout_ms, int stop_fd)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)(timeout_ms < 0 ? 0 : timeout_ms));
	const uint8_t *p = buf;
	ssize_t n;
	int rc;

	while (len) {
		n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			return PS_EPEER_LOST;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		rc = wait_fd(fd, POLLOUT, stop_fd, deadline);
		if (rc)
			return rc;
	}
	return 0;
}

int ps_ctl_send(int fd, const ps_ctl_env_t *env, int timeout_ms, int stop_fd)
{
	uint8_t *frame;
	size_t len;
	int rc;

	rc = ps_ctl_encode(env, &frame, &len);
	if (rc)
		return rc;
	rc = ps_ctl_write_all(fd, frame, len, timeout_ms, stop_fd);
	free(frame);
	return rc;
}

int ps_ctl_recv(int fd, int timeout_ms, int stop_fd, ps_ctl_env_t **out, char *why, size_t whylen)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)(timeout_ms < 0 ? 0 : timeout_ms));
	struct ps_ctl_reader r;
	int rc;

	ps_ctl_reader_init(&r, 0);
	for (;;) {
		rc = ps_ctl_reader_read_fd(&r, fd, out);
		if (rc == 1) {
			rc = 0;
			break;
		}
		if (rc < 0) {
			ps_errf(why, whylen, "%s", r.why);
			break;
		}
		rc = wait_fd(fd, POLLIN, stop_fd, deadline);
		if (rc) {
			ps_errf(why, whylen, "%s",
				rc == PS_ETIMEOUT ? "no reply in time" : "stopped");
			break;
		}
	}
	ps_ctl_reader_fini(&r);
	return rc;
}
