/*
 * The event ring of a loop, shared by the backends: events wait here between the completion or
 * socket work that produced them and the ps_tp_poll() that hands them to the caller. What handing
 * an event over releases (an op slot, a receive buffer) is the backend's business: it is named
 * by the event's ref and done by the backend as it pops.
 *
 * The ring never grows: a backend sizes it for the most events its connections can have queued
 * at once (each is bounded by the op slots and receive buffers that the event holds), so a push
 * that finds it full is a bug of that sizing, reported and dropped.
 *
 * Beside it an eventfd, kept readable exactly while events wait, so that a caller sleeping on
 * ps_tp_loop_fd() wakes for events that ps_tp_flush() produced or that did not fit into its last
 * ps_tp_poll(). It is written or read only on empty <-> non-empty transitions.
 *
 * One thread per loop, like the loop itself: nothing here locks.
 */
#ifndef PS_TRANSPORT_TP_EVQ_H
#define PS_TRANSPORT_TP_EVQ_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "transport/transport.h"

/* A queued event and what handing it to the caller releases. */
struct ps_tp_qev {
	struct ps_tp_event ev;
	uint32_t ref; /* backend-defined: an op slot, a receive buffer index */
};

struct ps_tp_evq {
	struct ps_tp_qev *ring;
	uint32_t cap, head, count;
	int wakefd;	 /* the eventfd; -1 before ps_tp_evq_init() */
	bool wake_armed; /* wakefd holds a count */
};

/**
 * ps_tp_evq_init() - a ring of @cap events and its eventfd (non-blocking, close-on-exec).
 * Returns 0, -EINVAL (@cap 0), -ENOMEM, or the eventfd's -errno; on failure nothing is held.
 */
int ps_tp_evq_init(struct ps_tp_evq *q, uint32_t cap);

/* ps_tp_evq_fini() - free the ring and close the eventfd; safe on a ring whose wakefd is -1. */
void ps_tp_evq_fini(struct ps_tp_evq *q);

/* ps_tp_evq_push() - queue a copy of @e: 0, or -ENOSPC when the ring is full (event dropped). */
static inline int ps_tp_evq_push(struct ps_tp_evq *q, const struct ps_tp_qev *e)
{
	uint32_t tail = q->head + q->count; /* both < cap: no wrap of the sum */

	if (q->count == q->cap)
		return -ENOSPC;
	q->ring[tail >= q->cap ? tail - q->cap : tail] = *e;
	q->count++;
	return 0;
}

/* ps_tp_evq_purge() - drop every queued event of @conn, keeping the others in order. */
void ps_tp_evq_purge(struct ps_tp_evq *q, const struct ps_tp_conn *conn);

/*
 * ps_tp_evq_pop() - the oldest event, taken off the ring, or NULL when it is empty. The entry
 * stays intact until the next push.
 */
static inline const struct ps_tp_qev *ps_tp_evq_pop(struct ps_tp_evq *q)
{
	const struct ps_tp_qev *e;

	if (!q->count)
		return NULL;
	e = &q->ring[q->head];
	q->head = q->head + 1 == q->cap ? 0 : q->head + 1;
	q->count--;
	return e;
}

/* ps_tp_evq_wake_flip() - ps_tp_evq_wake_sync()'s system call, when the state must change. */
void ps_tp_evq_wake_flip(struct ps_tp_evq *q);

/*
 * ps_tp_evq_wake_sync() - make the eventfd readable iff events wait (after pushes and pops).
 * Inline: every poll calls it, and it almost never has anything to do.
 */
static inline void ps_tp_evq_wake_sync(struct ps_tp_evq *q)
{
	if ((q->count != 0) != q->wake_armed)
		ps_tp_evq_wake_flip(q);
}

#endif
