/*
 * Generic transport entry points: choose a backend, dispatch through its ops table, keep the
 * counters.
 */
#include <errno.h>
#include <string.h>

#include <psplus/error.h>

#include "common/log.h"
#include "transport/tp_internal.h"

#define DEF_RECV_DEPTH	   64
#define DEF_MSG_SIZE	   (64u << 10)
#define DEF_SEND_DEPTH	   128
#define DEF_MAX_CONNS	   256
#define DEF_CONNECT_TMO_MS 5000

#ifndef PS_HAVE_VERBS
bool ps_tp_rdma_available(void)
{
	return false;
}
#endif

int ps_tp_dev_open(const struct ps_tp_dev_opts *opts, struct ps_tp_dev **out)
{
	const char *kind = opts && opts->kind ? opts->kind : "auto";

	if (!out)
		return -EINVAL;
	if (!strcmp(kind, "tcp"))
		return ps_tp_tcp_ops.dev_open(opts, out);
	if (!strcmp(kind, "rdma") || !strcmp(kind, "auto")) {
#ifdef PS_HAVE_VERBS
		if (!strcmp(kind, "rdma") || ps_tp_rdma_available())
			return ps_tp_rdma_ops.dev_open(opts, out);
#else
		if (!strcmp(kind, "rdma")) {
			ps_log_err("transport", "built without verbs (PS_WITH_VERBS=OFF)");
			return PS_ENO_DEVICE;
		}
#endif
		ps_log_info("transport", "no active RDMA device: using tcp");
		return ps_tp_tcp_ops.dev_open(opts, out);
	}
	return -EINVAL;
}

void ps_tp_dev_close(struct ps_tp_dev *dev)
{
	if (dev)
		dev->ops->dev_close(dev);
}

void ps_tp_dev_query(const struct ps_tp_dev *dev, struct ps_tp_dev_info *info)
{
	memset(info, 0, sizeof(*info));
	dev->ops->dev_query(dev, info);
}

void ps_tp_dev_base_init(struct ps_tp_dev *dev, const struct ps_tp_ops *ops)
{
	dev->ops = ops;
	dev->kind = ops->kind;
	pthread_mutex_init(&dev->lock, NULL);
	dev->loops = NULL;
	memset(&dev->retired, 0, sizeof(dev->retired));
}

void ps_tp_dev_base_fini(struct ps_tp_dev *dev)
{
	pthread_mutex_destroy(&dev->lock);
}

static void stats_add(struct ps_tp_stats *to, const struct ps_tp_stats *s)
{
	to->tx_bytes += s->tx_bytes;
	to->rx_bytes += s->rx_bytes;
	to->tx_ops += s->tx_ops;
	to->rx_ops += s->rx_ops;
	to->bytes_copied += s->bytes_copied;
	to->bytes_packed += s->bytes_packed;
	to->doorbells += s->doorbells;
	to->eagain += s->eagain;
}

void ps_tp_loop_base_init(struct ps_tp_loop *loop, struct ps_tp_dev *dev,
			  const struct ps_tp_loop_opts *opts)
{
	struct ps_tp_loop_opts o = opts ? *opts : (struct ps_tp_loop_opts){0};

	o.recv_depth = o.recv_depth ? o.recv_depth : DEF_RECV_DEPTH;
	o.msg_size = o.msg_size ? o.msg_size : DEF_MSG_SIZE;
	o.send_depth = o.send_depth ? o.send_depth : DEF_SEND_DEPTH;
	o.max_conns = o.max_conns ? o.max_conns : DEF_MAX_CONNS;
	o.connect_timeout_ms = o.connect_timeout_ms ? o.connect_timeout_ms : DEF_CONNECT_TMO_MS;
	loop->dev = dev;
	loop->opts = o;
	memset(&loop->stats, 0, sizeof(loop->stats));
	pthread_mutex_lock(&dev->lock);
	loop->next = dev->loops;
	dev->loops = loop;
	pthread_mutex_unlock(&dev->lock);
}

void ps_tp_loop_base_fini(struct ps_tp_loop *loop)
{
	struct ps_tp_dev *dev = loop->dev;
	struct ps_tp_loop **pp;

	pthread_mutex_lock(&dev->lock);
	for (pp = &dev->loops; *pp; pp = &(*pp)->next) {
		if (*pp == loop) {
			*pp = loop->next;
			break;
		}
	}
	stats_add(&dev->retired, &loop->stats);
	pthread_mutex_unlock(&dev->lock);
}

void ps_tp_stats_get(const struct ps_tp_dev *dev, struct ps_tp_stats *out)
{
	struct ps_tp_dev *d = (struct ps_tp_dev *)dev;

	pthread_mutex_lock(&d->lock);
	*out = d->retired;
	for (struct ps_tp_loop *l = d->loops; l; l = l->next)
		stats_add(out, &l->stats);
	pthread_mutex_unlock(&d->lock);
}

int ps_tp_mr_reg(struct ps_tp_dev *dev, void *addr, size_t len, struct ps_tp_mr **out)
{
	if (!dev || !addr || !len || !out)
		return -EINVAL;
	return dev->ops->mr_reg(dev, addr, len, out);
}

void ps_tp_mr_dereg(struct ps_tp_mr *mr)
{
	if (mr)
		mr->dev->ops->mr_dereg(mr);
}

void ps_tp_mr_query(const struct ps_tp_mr *mr, struct ps_tp_mr_info *info)
{
	*info = mr->info;
}

int ps_tp_mr_rbuf(const struct ps_tp_mr *mr, const void *addr, uint32_t len, struct ps_tp_rbuf *out)
{
	uintptr_t a = (uintptr_t)addr, base = (uintptr_t)mr->info.addr;

	if (a < base || a - base > mr->info.len || len > mr->info.len - (a - base))
		return -ERANGE;
	out->addr = (uint64_t)a;
	out->rkey = mr->info.rkey;
	out->len = len;
	return 0;
}

int ps_tp_loop_create(struct ps_tp_dev *dev, const struct ps_tp_loop_opts *opts,
		      struct ps_tp_loop **out)
{
	if (!dev || !out)
		return -EINVAL;
	return dev->ops->loop_create(dev, opts, out);
}

void ps_tp_loop_destroy(struct ps_tp_loop *loop)
{
	if (loop)
		loop->dev->ops->loop_destroy(loop);
}

int ps_tp_loop_fd(struct ps_tp_loop *loop)
{
	return loop->dev->ops->loop_fd(loop);
}

int ps_tp_listen(struct ps_tp_loop *loop, const char *host, uint16_t port,
		 struct ps_tp_listener **out)
{
	if (!loop || !out)
		return -EINVAL;
	return loop->dev->ops->listen(loop, host ? host : "", port, out);
}

uint16_t ps_tp_listener_port(const struct ps_tp_listener *l)
{
	return l->loop->dev->ops->listener_port(l);
}

void ps_tp_listener_close(struct ps_tp_listener *l)
{
	if (l)
		l->loop->dev->ops->listener_close(l);
}

int ps_tp_connect(struct ps_tp_loop *loop, const char *host, uint16_t port, void *user,
		  struct ps_tp_conn **out)
{
	if (!loop || !host || !*host || !port || !out)
		return -EINVAL;
	return loop->dev->ops->connect(loop, host, port, user, out);
}

void ps_tp_conn_close(struct ps_tp_conn *conn)
{
	if (conn)
		conn->loop->dev->ops->conn_close(conn);
}

void *ps_tp_conn_user(const struct ps_tp_conn *conn)
{
	return conn->user;
}

void ps_tp_conn_set_user(struct ps_tp_conn *conn, void *user)
{
	conn->user = user;
}

const char *ps_tp_conn_peer(const struct ps_tp_conn *conn)
{
	return conn->peer;
}

int ps_tp_send(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge, void *ctx)
{
	if (!conn || nsge < 0 || (nsge && !sgl))
		return -EINVAL;
	return conn->loop->dev->ops->send(conn, sgl, nsge, ctx);
}

int ps_tp_write_imm(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge,
		    const struct ps_tp_rbuf *dst, uint32_t imm, void *ctx)
{
	if (!conn || !dst || nsge < 0 || (nsge && !sgl))
		return -EINVAL;
	return conn->loop->dev->ops->write_imm(conn, sgl, nsge, dst, imm, ctx);
}

int ps_tp_flush(struct ps_tp_loop *loop)
{
	return loop->dev->ops->flush(loop);
}

int ps_tp_poll(struct ps_tp_loop *loop, struct ps_tp_event *evs, int max, int timeout_ms)
{
	if (!loop || !evs || max <= 0 || timeout_ms < 0)
		return -EINVAL;
	return loop->dev->ops->poll(loop, evs, max, timeout_ms);
}

void ps_tp_recv_release(struct ps_tp_conn *conn, void *buf)
{
	conn->loop->dev->ops->recv_release(conn, buf);
}
