/* The event loop: epoll plus a list of timers. */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "log.h"
#include "status.h"
#include "util.h"

struct watch {
	int fd;
	loop_fd_fn fn;
	void *ctx;
	bool removed; /* freed after the current batch: epoll may still hand it out */
	struct watch *next;
};

struct loop {
	int epoll_fd;
	struct watch *watches;
	struct loop_timer *timers;
	bool stopped;
	int stop_code;
};

int loop_create(struct loop **out)
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
	struct watch **link = &loop->watches;
	while (*link) {
		struct watch *watch = *link;
		if (watch->removed) {
			*link = watch->next;
			free(watch);
		} else {
			link = &watch->next;
		}
	}
}

void loop_destroy(struct loop *loop)
{
	if (loop == NULL)
		return;
	for (struct watch *watch = loop->watches; watch; watch = watch->next)
		watch->removed = true;
	free_removed(loop);
	close(loop->epoll_fd);
	free(loop);
}

static struct watch *find_watch(struct loop *loop, int fd)
{
	for (struct watch *watch = loop->watches; watch; watch = watch->next)
		if (watch->fd == fd && !watch->removed)
			return watch;
	return NULL;
}

int loop_add(struct loop *loop, int fd, uint32_t events, loop_fd_fn fn, void *ctx)
{
	struct watch *watch = calloc(1, sizeof *watch);
	if (watch == NULL)
		return BA_EX_OSERR;
	*watch = (struct watch){ .fd = fd, .fn = fn, .ctx = ctx, .next = loop->watches };
	struct epoll_event event = { .events = events, .data.ptr = watch };
	if (epoll_ctl(loop->epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0) {
		log_error("epoll_ctl(ADD, fd %d): %m", fd);
		free(watch);
		return BA_EX_OSERR;
	}
	loop->watches = watch;
	return BA_OK;
}

int loop_modify(struct loop *loop, int fd, uint32_t events)
{
	struct watch *watch = find_watch(loop, fd);
	if (watch == NULL)
		return BA_EX_SOFTWARE;
	struct epoll_event event = { .events = events, .data.ptr = watch };
	if (epoll_ctl(loop->epoll_fd, EPOLL_CTL_MOD, fd, &event) < 0) {
		log_error("epoll_ctl(MOD, fd %d): %m", fd);
		return BA_EX_OSERR;
	}
	return BA_OK;
}

void loop_remove(struct loop *loop, int fd)
{
	struct watch *watch = find_watch(loop, fd);
	if (watch == NULL)
		return;
	epoll_ctl(loop->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
	watch->removed = true;
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

void loop_stop(struct loop *loop, int code)
{
	if (loop->stopped)
		return;
	loop->stopped = true;
	loop->stop_code = code;
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

int loop_run(struct loop *loop)
{
	enum { BATCH = 32 };
	struct epoll_event events[BATCH];
	while (!loop->stopped) {
		int count = epoll_wait(loop->epoll_fd, events, BATCH, next_timeout_ms(loop));
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
	return loop->stop_code;
}
