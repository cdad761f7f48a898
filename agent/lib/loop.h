/* One blocking wait for everything the agent watches: signals, sockets, pipes and
 * timers. epoll for the descriptors, a short list of deadlines for the timers; the
 * agent sleeps in epoll_wait between events and never polls. */
#ifndef BATCH_AGENT_LOOP_H
#define BATCH_AGENT_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "status.h"

struct loop;
typedef void (*loop_fd_fn)(struct loop *loop, int fd, uint32_t events, void *ctx);
typedef void (*loop_timer_fn)(struct loop *loop, void *ctx);

/* A timer lives inside its owner's struct; the loop only links it. */
struct loop_timer {
	int64_t deadline_ms;
	loop_timer_fn fn;
	void *ctx;
	bool armed;
	struct loop_timer *next;
};

enum ba_status loop_create(struct loop **out);
void loop_destroy(struct loop *loop);

/* events: EPOLLIN, EPOLLOUT, ... Callbacks may add and remove descriptors and timers,
 * including their own. */
enum ba_status loop_add(struct loop *loop, int fd, uint32_t events, loop_fd_fn fn, void *ctx);
/* No system call when events is the interest set fd has already. */
enum ba_status loop_modify(struct loop *loop, int fd, uint32_t events);
void loop_remove(struct loop *loop, int fd);

void loop_timer_arm(struct loop *loop, struct loop_timer *timer, int64_t delay_ms, loop_timer_fn fn, void *ctx);
void loop_timer_cancel(struct loop *loop, struct loop_timer *timer);

/* Dispatch until loop_stop; returns the status given to it, or BA_EX_OSERR. */
enum ba_status loop_run(struct loop *loop);
void loop_stop(struct loop *loop, enum ba_status status);

#endif
