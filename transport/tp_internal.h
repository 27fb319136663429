/*
 * What the backends share: the base of every transport object, which the generic functions in
 * transport.c dispatch on. A backend embeds the base as the FIRST member of its own struct and
 * gets back to it with container_of().
 */
#ifndef PS_TRANSPORT_TP_INTERNAL_H
#define PS_TRANSPORT_TP_INTERNAL_H

#include <pthread.h>
#include <stddef.h>

#include "transport/transport.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

struct ps_tp_dev {
	const struct ps_tp_ops *ops;
	enum ps_tp_kind kind;
	pthread_mutex_t lock;	    /* protects loops and retired */
	struct ps_tp_loop *loops;   /* live loops, linked through loop->next */
	struct ps_tp_stats retired; /* counters of loops already destroyed */
};

struct ps_tp_mr {
	struct ps_tp_dev *dev;
	struct ps_tp_mr_info info;
};

/*
 * Counters live in the loop (one writer thread, no atomics on the hot path); readers sum them
 * under dev->lock, accepting a slightly stale view.
 */
struct ps_tp_loop {
	struct ps_tp_dev *dev;
	struct ps_tp_loop_opts opts; /* with defaults filled in */
	struct ps_tp_stats stats;
	struct ps_tp_loop *next;
};

struct ps_tp_listener {
	struct ps_tp_loop *loop;
};

struct ps_tp_conn {
	struct ps_tp_loop *loop;
	void *user;
	char peer[64]; /* "host:port" */
};

/* Backends. ps_tp_rdma_ops exists only when built with PS_WITH_VERBS. */
extern const struct ps_tp_ops ps_tp_tcp_ops;
extern const struct ps_tp_ops ps_tp_rdma_ops;

/* Called by a backend's dev_open / loop_create / loop_destroy to keep the shared parts. */
void ps_tp_dev_base_init(struct ps_tp_dev *dev, const struct ps_tp_ops *ops);
void ps_tp_dev_base_fini(struct ps_tp_dev *dev);
void ps_tp_loop_base_init(struct ps_tp_loop *loop, struct ps_tp_dev *dev,
			  const struct ps_tp_loop_opts *opts);
void ps_tp_loop_base_fini(struct ps_tp_loop *loop);

#endif
