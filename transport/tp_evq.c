/*
 * The event ring of a loop and its eventfd (tp_evq.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "transport/tp_evq.h"

int ps_tp_evq_init(struct ps_tp_evq *q, uint32_t cap)
{
	*q = (struct ps_tp_evq){.wakefd = -1};
	if (!cap)
		return -EINVAL;
	q->ring = calloc(cap, sizeof(*q->ring));
	if (!q->ring)
		return -ENOMEM;
	q->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->wakefd < 0) {
		int rc = -errno;

		free(q->ring);
		q->ring = NULL;
		return rc;
	}
	q->cap = cap;
	return 0;
}

void ps_tp_evq_fini(struct ps_tp_evq *q)
{
	if (q->wakefd >= 0)
		close(q->wakefd);
	free(q->ring);
	*q = (struct ps_tp_evq){.wakefd = -1};
}

void ps_tp_evq_purge(struct ps_tp_evq *q, const struct ps_tp_conn *conn)
{
	uint32_t keep = 0, src, dst;

	for (uint32_t i = 0; i < q->count; i++) {
		src = (q->head + i) % q->cap;
		if (q->ring[src].ev.conn == conn)
			continue;
		dst = (q->head + keep) % q->cap;
		if (dst != src)
			q->ring[dst] = q->ring[src];
		keep++;
	}
	q->count = keep;
	ps_tp_evq_wake_sync(q);
}

void ps_tp_evq_wake_flip(struct ps_tp_evq *q)
{
	uint64_t v = 1;

	if (q->count && !q->wake_armed)
		q->wake_armed = write(q->wakefd, &v, sizeof(v)) == (ssize_t)sizeof(v);
	else if (!q->count && q->wake_armed)
		q->wake_armed = read(q->wakefd, &v, sizeof(v)) != (ssize_t)sizeof(v);
}
