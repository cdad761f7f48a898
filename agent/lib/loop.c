/* The event loop: epoll, a table of watches indexed by descriptor, and a list of
 * timers.
 *
 * Every lookup is by descriptor number, which the kernel hands out densely from the
 * lowest free one, so the table stays about as long as the highest descriptor: adding,
 * changing and removing a watch cost O(1) whatever the number of peers, and
 * loop_modify makes no system call when the interest set is what it was. */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "log.h"
#include "status.h"
#include "util.h"

enum { EVENTS_PER_WAIT = 256 };

struct watch {
	int fd;
	uint32_t events; /* the interest set epoll has now */
	loop_fd_fn fn;
	void *ctx;
	bool removed;        /* freed after the current batch: epoll may still hand it out */
	struct watch *next_removed;
};

struct loop {
	int epoll_fd;
	struct watch **by_fd; /* by_fd[fd]: the live watch of fd, or NULL */
	size_t by_fd_size;
	struct watch *removed; /* removed during this batch, freed after it */
	struct loop_timer *timers;
	bool stopped;
	enum ba_status stop_status;
};

enum ba_status loop_create(struct loop **out)
{
	struct loop *loop = calloc(1, sizeof *loop);
	if (loop == NULL)
		return BA_EX_OSERR;
	loop->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epoll_fd < 0) {
		log_error("epoll_create1: %m");
		free(loop);
		return BA_EX_OSERR;
	}
	*out = loop;
	return BA_OK;
}

static void free_removed(struct loop *loop)
{
	while (loop->removed) {
		struct watch *watch = loop->removed;
		loop->removed = watch->next_removed;
		free(watch);
	}
}

void loop_destroy(struct loop *loop)
{
	if (loop == NULL)
		return;
	for (size_t fd = 0; fd < loop->by_fd_size; fd++)
		free(loop->by_fd[fd]);
	free_removed(loop);
	free(loop->by_fd);
	close(loop->epoll_fd);
	free(loop);
}

static struct watch *find_watch(const struct loop *loop, int fd)
{
	return fd >= 0 && (size_t)fd < loop->by_fd_size ? loop->by_fd[fd] : NULL;
}

/* Room for by_fd[fd], doubling: a thousand peers cost a handful of reallocations. */
static enum ba_status reserve(struct loop *loop, int fd)
{
	if ((size_t)fd < loop->by_fd_size)
		return BA_OK;
	size_t size = loop->by_fd_size ? loop->by_fd_size : 64;
	while (size <= (size_t)fd)
		size *= 2;
	struct watch **table = realloc(loop->by_fd, size * sizeof *table);
	if (table == NULL)
		return BA_EX_OSERR;
	for (size_t i = loop->by_fd_size; i < size; i++)
		table[i] = NULL;
	loop->by_fd = table;
	loop->by_fd_size = size;
	return BA_OK;
}

enum ba_status loop_add(struct loop *loop, int fd, uint32_t events, loop_fd_fn fn, void *ctx)
{
	if (fd < 0 || find_watch(loop, fd) != NULL)
		return BA_EX_SOFTWARE;
	struct watch *watch = calloc(1, sizeof *watch);
	if (watch == NULL || reserve(loop, fd) != BA_OK) {
		free(watch);
		return BA_EX_OSERR;
	}
	*watch = (struct watch){ .fd = fd, .events = events, .fn = fn, .ctx = ctx };
	struct epoll_event event = { .events = events, .data.ptr = watch };
	if (epoll_ctl(loop->epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0) {
		log_error("epoll_ctl(ADD, fd %d): %m", fd);
		free(watch);
		return BA_EX_OSERR;
	}
	loop->by_fd[fd] = watch;
	return BA_OK;
}

enum ba_status loop_modify(struct loop *loop, int fd, uint32_t events)
{
	struct watch *watch = find_watch(loop, fd);
	if (watch == NULL)
		return BA_EX_SOFTWARE;
	if (watch->events == events)
		return BA_OK;
	struct epoll_event event = { .events = events, .data.ptr = watch };
	if (epoll_ctl(loop->epoll_fd, EPOLL_CTL_MOD, fd, &event) < 0) {
		log_error("epoll_ctl(MOD, fd %d): %m", fd);
		return BA_EX_OSERR;
	}
	watch->events = events;
	return BA_OK;
}

static void unlink_watch(struct loop *loop, struct watch *watch)
{
	loop->by_fd[watch->fd] = NULL;
	watch->removed = true;
	watch->next_removed = loop->removed;
	loop->removed = watch;
}

void loop_remove(struct loop *loop, int fd)
{
	struct watch *watch = find_watch(loop, fd);
	if (watch == NULL)
		return;
	epoll_ctl(loop->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
	unlink_watch(loop, watch);
}

void loop_timer_arm(struct loop *loop, struct loop_timer *timer, int64_t delay_ms, loop_timer_fn fn, void *ctx)
{
	loop_timer_cancel(loop, timer);
	timer->deadline_ms = util_now_ms() + delay_ms;
	timer->fn = fn;
	timer->ctx = ctx;
	timer->armed = true;
	timer->next = loop->timers;
	loop->timers = timer;
}

void loop_timer_cancel(struct loop *loop, struct loop_timer *timer)
{
	if (!timer->armed)
		return;
	for (struct loop_timer **link = &loop->timers; *link; link = &(*link)->next) {
		if (*link == timer) {
			*link = timer->next;
			break;
		}
	}
	timer->armed = false;
	timer->next = NULL;
}

void loop_stop(struct loop *loop, enum ba_status status)
{
	if (loop->stopped)
		return;
	loop->stopped = true;
	loop->stop_status = status;
}

static int next_timeout_ms(const struct loop *loop)
{
	if (loop->timers == NULL)
		return -1;
	int64_t earliest = loop->timers->deadline_ms;
	for (const struct loop_timer *timer = loop->timers; timer; timer = timer->next)
		if (timer->deadline_ms < earliest)
			earliest = timer->deadline_ms;
	int64_t wait = earliest - util_now_ms();
	if (wait < 0)
		return 0;
	return wait > 60 * 60 * 1000 ? 60 * 60 * 1000 : (int)wait;
}

static void fire_due_timers(struct loop *loop)
{
	/* Restart the scan after each callback: it may arm or cancel any timer. */
	for (;;) {
		int64_t now = util_now_ms();
		struct loop_timer *due = NULL;
		for (struct loop_timer *timer = loop->timers; timer; timer = timer->next)
			if (timer->deadline_ms <= now && (due == NULL || timer->deadline_ms < due->deadline_ms))
				due = timer;
		if (due == NULL || loop->stopped)
			return;
		loop_timer_cancel(loop, due);
		due->fn(loop, due->ctx);
	}
}

enum ba_status loop_run(struct loop *loop)
{
	struct epoll_event events[EVENTS_PER_WAIT];
	while (!loop->stopped) {
		int count = epoll_wait(loop->epoll_fd, events, EVENTS_PER_WAIT, next_timeout_ms(loop));
		if (count < 0) {
			if (errno == EINTR)
				continue;
			log_error("epoll_wait: %m");
			return BA_EX_OSERR;
		}
		for (int i = 0; i < count && !loop->stopped; i++) {
			struct watch *watch = events[i].data.ptr;
			if (!watch->removed)
				watch->fn(loop, watch->fd, events[i].events, watch->ctx);
		}
		free_removed(loop);
		fire_due_timers(loop);
	}
	return loop->stop_status;
}
