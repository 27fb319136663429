/*
 * tcp backend: the dev, its registered-region table, and the ops table.
 *
 * A tcp "registration" pins nothing; it is the permission a peer needs to write into our
 * memory. Every inbound WRITE_IMM names a region by rkey and is bounds-checked against it
 * before a single byte is read off the socket, so a peer (buggy or hostile) can never make us
 * write outside memory the application registered.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "transport/tcp/tcp_internal.h"

#define MR_GEN_MASK  ((1u << (32 - TCP_MR_IDX_BITS)) - 1)
#define MR_FIRST_CAP 16u

static struct tcp_dev *tcp_dev_of(struct ps_tp_dev *d)
{
	return container_of(d, struct tcp_dev, base);
}

static int dev_open(const struct ps_tp_dev_opts *opts, struct ps_tp_dev **out)
{
	pthread_rwlockattr_t attr;
	struct tcp_dev *d;
	int rc;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->numa_node = opts ? opts->numa_node : -1;
	rc = -pthread_rwlockattr_init(&attr);
	if (rc)
		goto err_free;
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	rc = -pthread_rwlock_init(&d->mr_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	if (rc)
		goto err_free;
	ps_tp_dev_base_init(&d->base, &ps_tp_tcp_ops);
	*out = &d->base;
	return 0;

err_free:
	free(d);
	return rc;
}

static void dev_close(struct ps_tp_dev *dev)
{
	struct tcp_dev *d = tcp_dev_of(dev);

	if (d->base.loops)
		ps_log_warn(TCP_LOG, "dev closed with loops still open");
	if (d->mr_count) {
		/* A caller bug; freeing the handles keeps it from also being a leak. */
		ps_log_warn(TCP_LOG, "dev closed with %u regions still registered", d->mr_count);
		for (uint32_t i = 0; i < d->mr_cap; i++)
			free(d->mrs[i]);
	}
	free(d->mrs);
	free(d->mr_gen);
	pthread_rwlock_destroy(&d->mr_lock);
	ps_tp_dev_base_fini(&d->base);
	free(d);
}

static void dev_query(const struct ps_tp_dev *dev, struct ps_tp_dev_info *info)
{
	const struct tcp_dev *d = container_of(dev, const struct tcp_dev, base);

	info->kind = PS_TP_KIND_TCP;
	strcpy(info->name, "tcp");
	info->port = 0;
	info->active_mtu = 0;
	info->max_sge = IOV_MAX;
	info->max_inline = 0;
	info->numa_node = d->numa_node;
	info->gid[0] = '\0';
	info->netdev[0] = '\0';
}

/*
 * Random generation bits for a new rkey. getrandom() on the registration path is cheap enough;
 * if the kernel has no entropy ready yet (GRND_NONBLOCK), the clock still makes the key differ
 * from the slot's previous one, which is what matters for stale keys.
 */
static uint32_t mr_gen_next(uint32_t prev)
{
	uint32_t g = 0;

	for (int tries = 0;; tries++) {
		if (getrandom(&g, sizeof(g), GRND_NONBLOCK) != (ssize_t)sizeof(g))
			g = (uint32_t)(ps_clock_now_ns() * 0x9e3779b97f4a7c15ull >> 32) +
			    (uint32_t)tries;
		g &= MR_GEN_MASK;
		if (g && g != prev)
			return g;
	}
}

/* A free slot in the table, growing it (under the write lock) when full. */
static int mr_slot_get(struct tcp_dev *d, uint32_t *idx)
{
	struct tcp_mr **mrs;
	uint32_t *gen, cap;

	for (uint32_t i = 0; i < d->mr_cap; i++) {
		if (!d->mrs[i]) {
			*idx = i;
			return 0;
		}
	}
	if (d->mr_cap >= TCP_MR_MAX)
		return -ENOSPC;
	cap = d->mr_cap ? d->mr_cap * 2 : MR_FIRST_CAP;
	mrs = realloc(d->mrs, cap * sizeof(*mrs));
	if (!mrs)
		return -ENOMEM;
	d->mrs = mrs;
	gen = realloc(d->mr_gen, cap * sizeof(*gen));
	if (!gen)
		return -ENOMEM; /* the larger mrs array stays; mr_cap still tells its used part */
	d->mr_gen = gen;
	memset(mrs + d->mr_cap, 0, (cap - d->mr_cap) * sizeof(*mrs));
	memset(gen + d->mr_cap, 0, (cap - d->mr_cap) * sizeof(*gen));
	*idx = d->mr_cap;
	d->mr_cap = cap;
	return 0;
}

static int mr_reg(struct ps_tp_dev *dev, void *addr, size_t len, struct ps_tp_mr **out)
{
	struct tcp_dev *d = tcp_dev_of(dev);
	struct tcp_mr *mr;
	uint32_t idx;
	int rc;

	if ((uintptr_t)addr + len < (uintptr_t)addr)
		return -EINVAL;
	mr = calloc(1, sizeof(*mr));
	if (!mr)
		return -ENOMEM;
	pthread_rwlock_wrlock(&d->mr_lock);
	rc = mr_slot_get(d, &idx);
	if (rc) {
		pthread_rwlock_unlock(&d->mr_lock);
		if (rc == -ENOSPC)
			ps_log_err(TCP_LOG, "region table full (%u regions per dev)", TCP_MR_MAX);
		free(mr);
		return rc;
	}
	d->mr_gen[idx] = mr_gen_next(d->mr_gen[idx]);
	mr->idx = idx;
	mr->base.dev = dev;
	mr->base.info.addr = addr;
	mr->base.info.len = len;
	mr->base.info.rkey = d->mr_gen[idx] << TCP_MR_IDX_BITS | idx;
	/* tcp gathers need no local key; one value for both keeps logs simple. */
	mr->base.info.lkey = mr->base.info.rkey;
	d->mrs[idx] = mr;
	d->mr_count++;
	pthread_rwlock_unlock(&d->mr_lock);
	*out = &mr->base;
	return 0;
}

static void mr_dereg(struct ps_tp_mr *m)
{
	struct tcp_mr *mr = container_of(m, struct tcp_mr, base);
	struct tcp_dev *d = tcp_dev_of(m->dev);

	/* Waits for any loop that is reading into the region right now (it holds the read lock). */
	pthread_rwlock_wrlock(&d->mr_lock);
	d->mrs[mr->idx] = NULL;
	d->mr_count--;
	pthread_rwlock_unlock(&d->mr_lock);
	free(mr);
}

int ps_tcp_mr_lock_range(struct tcp_dev *d, uint32_t rkey, uint64_t addr, uint64_t len)
{
	uint32_t idx = rkey & (TCP_MR_MAX - 1);
	const struct tcp_mr *mr;
	uint64_t base, off;

	pthread_rwlock_rdlock(&d->mr_lock);
	if (idx >= d->mr_cap)
		goto bad;
	mr = d->mrs[idx];
	if (!mr || mr->base.info.rkey != rkey)
		goto bad;
	/* Written so nothing can overflow: addr - base first, then compare with what is left. */
	base = (uint64_t)(uintptr_t)mr->base.info.addr;
	if (addr < base)
		goto bad;
	off = addr - base;
	if (off > mr->base.info.len || len > mr->base.info.len - off)
		goto bad;
	return 0;

bad:
	pthread_rwlock_unlock(&d->mr_lock);
	return PS_EBAD_MESSAGE;
}

void ps_tcp_mr_unlock(struct tcp_dev *d)
{
	pthread_rwlock_unlock(&d->mr_lock);
}

const struct ps_tp_ops ps_tp_tcp_ops = {
	.name = "tcp",
	.kind = PS_TP_KIND_TCP,
	.dev_open = dev_open,
	.dev_close = dev_close,
	.dev_query = dev_query,
	.mr_reg = mr_reg,
	.mr_dereg = mr_dereg,
	.loop_create = ps_tcp_loop_create,
	.loop_destroy = ps_tcp_loop_destroy,
	.loop_fd = ps_tcp_loop_fd,
	.listen = ps_tcp_listen,
	.listener_port = ps_tcp_listener_port,
	.listener_close = ps_tcp_listener_close,
	.connect = ps_tcp_connect,
	.conn_close = ps_tcp_conn_close,
	.send = ps_tcp_send,
	.write_imm = ps_tcp_write_imm,
	.flush = ps_tcp_flush,
	.poll = ps_tcp_poll,
	.recv_release = ps_tcp_recv_release,
};
