/* The init loop. Read top to bottom: create, spawn, the signal handler, reaping, the
 * clean-up after the payload, and the timers that bound every wait. */
#include "supervise.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "log.h"
#include "signals.h"
#include "spotwatch.h"
#include "status.h"
#include "util.h"

/* After SIGKILL, how long to wait for processes stuck in uninterruptible sleep before
 * exiting anyway: an agent that never exits is worse than one stray process. */
#define KILL_SETTLE_MS 5000
/* How long the stopped Spot notice watcher gets to exit before SIGKILL. */
#define SPOTWATCH_STOP_MS 1000
/* An interruption notice whose time cannot be read: EC2's notice comes two minutes
 * ahead of the interruption (EC2 User Guide, Spot Instance interruption notices). */
#define SPOT_NOTICE_LEAD_MS (120 * 1000)

enum phase {
	PHASE_IDLE,     /* no payload yet */
	PHASE_RUNNING,  /* the payload runs */
	PHASE_CLEANUP,  /* the payload ended; waiting for what it left behind */
	PHASE_HOLD,     /* all gone after a Spot interruption: waiting for the host to go */
	PHASE_DONE,
};

struct supervisor {
	struct loop *loop;
	struct supervise_opts opts;
	struct supervise_hooks hooks;
	enum phase phase;
	pid_t pid;              /* the payload, also its process group */
	int exit_status;
	bool terminal;          /* the payload took our terminal's foreground */
	bool grace_over;        /* the grace period ran out: no more patience */
	bool payload_stopped;   /* stopped by job control, waiting for SIGCONT */
	struct loop_timer kill_timer;
	struct loop_timer settle_timer;
	struct spotwatch *spot;
	struct loop_timer watcher_timer; /* SIGKILL for a watcher slow to stop */
	bool awaiting_watcher;           /* leftovers are looked for once it is reaped */
	bool spot_interrupted;           /* an interruption notice came while the payload ran */
	bool stop_requested;             /* a terminating signal came: never hold then */
	int64_t hold_until_ms;           /* CLOCK_MONOTONIC: the notice's time + --spot-hold */
	struct loop_timer hold_timer;
};

struct supervise_opts supervise_opts_from_config(const struct config *cfg)
{
	return (struct supervise_opts){
		.group = cfg->group,
		.grace_ms = cfg->grace_ms,
		.spot_watch = spotwatch_wanted(cfg, true),
		.spot_required = cfg->spot_watch == SPOT_WATCH_ON,
		.spot_signal = cfg->spot_signal,
		.spot_hold_ms = cfg->spot_hold_ms,
		.remap_exit = cfg->remap_exit,
		.rewrite_signal = cfg->rewrite_signal,
	};
}

static void on_signals(struct loop *loop, int fd, uint32_t events, void *ctx);

enum ba_status supervise_create(struct supervisor **out, struct loop *loop, const struct supervise_opts *opts,
		     const struct supervise_hooks *hooks)
{
	enum ba_status rc = signals_take_over();
	if (rc != BA_OK)
		return rc;
	/* Not PID 1: orphans would go to the real init, which may not reap them and never
	 * tells us; as a subreaper they come to us like they would to PID 1. */
	if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
		log_error("prctl(PR_SET_CHILD_SUBREAPER): %m");
		return BA_EX_OSERR;
	}
	struct supervisor *sv = calloc(1, sizeof *sv);
	if (sv == NULL)
		return BA_EX_OSERR;
	sv->loop = loop;
	sv->opts = *opts;
	if (hooks)
		sv->hooks = *hooks;
	rc = loop_add(loop, signals_fd(), EPOLLIN, on_signals, sv);
	if (rc != BA_OK) {
		free(sv);
		return rc;
	}
	*out = sv;
	return BA_OK;
}

void supervise_free(struct supervisor *sv)
{
	if (sv == NULL)
		return;
	loop_timer_cancel(sv->loop, &sv->kill_timer);
	loop_timer_cancel(sv->loop, &sv->settle_timer);
	loop_timer_cancel(sv->loop, &sv->watcher_timer);
	loop_timer_cancel(sv->loop, &sv->hold_timer);
	loop_remove(sv->loop, signals_fd());
	spotwatch_free(sv->spot);
	free(sv);
}

bool supervise_running(const struct supervisor *sv)
{
	return sv->phase == PHASE_RUNNING;
}

bool supervise_grace_expired(const struct supervisor *sv)
{
	return sv->grace_over;
}

/* When a hold after this interruption would end: the notice's time (EC2's clock, read
 * against ours) plus the --spot-hold margin; two minutes from now when the time is
 * missing or unreadable. */
static void note_interruption(struct supervisor *sv, const char *time)
{
	int64_t at_ms, now_ms = util_now_ms();
	if (time != NULL && util_parse_rfc3339_ms(time, &at_ms)) {
		sv->hold_until_ms = now_ms + (at_ms - util_wall_ms());
	} else {
		log_warn("the Spot interruption notice has no readable time: taking it as %d s from now",
			 SPOT_NOTICE_LEAD_MS / 1000);
		sv->hold_until_ms = now_ms + SPOT_NOTICE_LEAD_MS;
	}
	sv->hold_until_ms += sv->opts.spot_hold_ms;
	sv->spot_interrupted = true;
}

/* Spot capacity is about to be reclaimed (a two-minute warning) or at elevated risk
 * (rebalance). An interruption gets the payload --spot-signal now, ahead of the kill,
 * so it can checkpoint; a rebalance recommendation is only reported. */
static void on_spot_notice(void *ctx, const char *type, const char *action, const char *time)
{
	struct supervisor *sv = ctx;
	char name[32];
	bool interruption = strcmp(type, "instance-action") == 0;
	log_warn("Spot %s notice%s%s%s%s", interruption ? "interruption" : type, action ? ": " : "", action ? action : "",
		 time ? " at " : "", time ? time : "");
	if (interruption && sv->phase == PHASE_RUNNING && sv->opts.spot_hold_ms != CONFIG_SPOT_HOLD_OFF)
		note_interruption(sv, time);
	if (interruption && sv->phase == PHASE_RUNNING) {
		log_warn("sending %s to the payload ahead of the interruption",
			 util_signal_name(sv->opts.spot_signal, name, sizeof name));
		supervise_signal(sv, sv->opts.spot_signal);
	}
	if (sv->hooks.spot_notice)
		sv->hooks.spot_notice(sv->hooks.ctx, type, action, time);
}

enum ba_status supervise_spawn(struct supervisor *sv, const struct payload *payload)
{
	enum ba_status rc = launch_spawn(payload, &sv->pid, &sv->terminal);
	if (rc != BA_OK)
		return rc;
	sv->phase = PHASE_RUNNING;
	/* The payload has its working directory (exec has happened: launch_spawn waited
	 * for it); ours would keep the mount under it busy, so that it could not be
	 * unmounted, for no use: everything the agent opens from now on is absolute. Before
	 * the started hook, whose seccomp filter would refuse chdir. */
	if (chdir("/") < 0)
		log_warn("cannot change to the directory /: %m; the agent keeps its working directory");
	/* After the payload, so that watching never delays it; a watcher that cannot
	 * start costs a warning, not the job. */
	if (sv->opts.spot_watch &&
	    spotwatch_start(&sv->spot, sv->loop, sv->opts.spot_required, on_spot_notice, sv) != BA_OK)
		log_warn("cannot start the Spot notice watcher: not watching");
	log_debug("payload %s started as pid %ld", payload->argv[0], (long)sv->pid);
	if (sv->hooks.started)
		sv->hooks.started(sv->hooks.ctx, sv->pid);
	return BA_OK;
}

/* ---- signals to the payload and to what it leaves behind ---- */

void supervise_signal(struct supervisor *sv, int sig)
{
	if (sv->phase != PHASE_RUNNING)
		return;
	/* The payload leads its own group; without -g only the leader gets the signal. */
	pid_t target = sv->opts.group ? -sv->pid : sv->pid;
	if (kill(target, sig) < 0 && errno == ESRCH && sv->opts.group)
		kill(sv->pid, sig);
}

struct process {
	pid_t pid, ppid;
	bool stopped; /* a stopped process cannot act on SIGTERM until continued */
	bool below;   /* descends from the agent */
};

static int by_pid(const void *a, const void *b)
{
	pid_t x = ((const struct process *)a)->pid, y = ((const struct process *)b)->pid;
	return (x > y) - (x < y);
}

/* Every living process of the host, from /proc; NULL when /proc cannot be read. */
static struct process *read_process_table(size_t *count_out)
{
	DIR *proc = opendir("/proc");
	if (proc == NULL)
		return NULL;
	size_t count = 0, capacity = 256;
	struct process *table = malloc(capacity * sizeof *table);
	struct dirent *entry;
	while (table != NULL && (entry = readdir(proc)) != NULL) {
		long pid, ppid;
		char path[64], stat[512], state;
		if (!util_parse_long(entry->d_name, 1, INT32_MAX, &pid))
			continue;
		snprintf(path, sizeof path, "/proc/%ld/stat", pid);
		FILE *file = fopen(path, "re");
		if (file == NULL)
			continue;
		size_t n = fread(stat, 1, sizeof stat - 1, file);
		fclose(file);
		stat[n] = '\0';
		/* "pid (comm) state ppid": comm may hold anything, so parse after the last ')'.
		 * A zombie is already dead: reaping, not signalling, is what it needs. */
		char *close_paren = strrchr(stat, ')');
		if (close_paren == NULL || sscanf(close_paren + 1, " %c %ld", &state, &ppid) != 2 || state == 'Z')
			continue;
		if (count == capacity) {
			struct process *grown = realloc(table, (capacity *= 2) * sizeof *table);
			if (grown == NULL)
				break;
			table = grown;
		}
		table[count++] = (struct process){ .pid = (pid_t)pid, .ppid = (pid_t)ppid,
						   .stopped = state == 'T' || state == 't' };
	}
	closedir(proc);
	*count_out = count;
	return table;
}

/* Every process descended from us: orphans re-parent to us, so a process that is
 * neither our child nor below one cannot exist. As PID 1 that is everybody else in
 * the namespace; otherwise we walk /proc for the subtree (sorted by pid, one pass per
 * level of the tree). Returns how many were signalled, or -1 without /proc. */
static int signal_descendants(pid_t self, int sig)
{
	if (self == 1)
		return kill(-1, sig) == 0 ? 1 : 0;
	size_t count = 0;
	struct process *table = read_process_table(&count);
	if (table == NULL)
		return -1;
	qsort(table, count, sizeof *table, by_pid);
	int signalled = 0;
	for (bool grew = true; grew;) {
		grew = false;
		for (size_t i = 0; i < count; i++) {
			if (table[i].below)
				continue;
			struct process key = { .pid = table[i].ppid };
			const struct process *parent = bsearch(&key, table, count, sizeof *table, by_pid);
			if (table[i].ppid != self && (parent == NULL || !parent->below))
				continue;
			table[i].below = grew = true;
			if (kill(table[i].pid, sig) == 0)
				signalled++;
			if (table[i].stopped && sig != SIGKILL)
				kill(table[i].pid, SIGCONT);
		}
	}
	free(table);
	return signalled;
}

/* Any child left, dead or alive? Every descendant has a live child of ours above it or
 * is one, so "no children" means nothing is left, and the /proc walk can be skipped
 * (it is most of the cost of a short job). WNOWAIT leaves zombies for reap(). */
static bool has_children(void)
{
	siginfo_t info;
	return waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) == 0;
}

static void on_kill_timer(struct loop *loop, void *ctx);
static void on_settle_timer(struct loop *loop, void *ctx);

/* A payload stopped by job control cannot act on SIGTERM until it is continued: the
 * grace period would pass for nothing. */
static void continue_if_stopped(struct supervisor *sv)
{
	if (!sv->payload_stopped)
		return;
	kill(-sv->pid, SIGCONT);
	sv->payload_stopped = false;
}

static void arm_grace(struct supervisor *sv, int64_t grace_ms)
{
	if (!sv->kill_timer.armed && !sv->grace_over)
		loop_timer_arm(sv->loop, &sv->kill_timer, grace_ms, on_kill_timer, sv);
}

void supervise_terminate(struct supervisor *sv, int sig, int64_t grace_ms, const char *reason)
{
	char name[32];
	if (sv->phase != PHASE_RUNNING)
		return;
	int sent = config_pairs_map(&sv->opts.rewrite_signal, sig);
	log_info("%s: sending %s to the payload, SIGKILL in %.1f s if it has not exited", reason,
		 sent ? util_signal_name(sent, name, sizeof name) : "nothing (--rewrite-signal)", (double)grace_ms / 1000.0);
	if (sent != 0)
		supervise_signal(sv, sent);
	continue_if_stopped(sv);
	arm_grace(sv, grace_ms);
}

/* The end: the agent may exit with the payload's status. */
static void report_finished(struct supervisor *sv)
{
	sv->phase = PHASE_DONE;
	loop_timer_cancel(sv->loop, &sv->hold_timer);
	if (sv->hooks.finished)
		sv->hooks.finished(sv->hooks.ctx, sv->exit_status);
	else
		loop_stop(sv->loop, sv->exit_status);
}

static void on_hold_timer(struct loop *loop, void *ctx)
{
	struct supervisor *sv = ctx;
	(void)loop;
	log_warn("the host is still here %.0f s after the Spot interruption's time: exiting with the payload's status %d",
		 (double)sv->opts.spot_hold_ms / 1000.0, sv->exit_status);
	report_finished(sv);
}

/* After a Spot interruption the attempt should end with the host, so that Batch
 * reports "Host EC2 (instance ...) terminated", which a retry strategy can match,
 * rather than the payload's exit ("Essential container in task exited"). Nothing of
 * the payload's runs any more; signals and reaping go on (PHASE_HOLD). False when
 * there is nothing to wait for. */
static bool hold(struct supervisor *sv)
{
	if (!sv->spot_interrupted || sv->stop_requested)
		return false;
	int64_t left_ms = sv->hold_until_ms - util_now_ms();
	if (left_ms <= 0) {
		log_info("the Spot interruption's time plus %.0f s (--spot-hold) has passed: not waiting for the host",
			 (double)sv->opts.spot_hold_ms / 1000.0);
		return false;
	}
	sv->phase = PHASE_HOLD;
	log_warn("the payload ended after a Spot interruption notice: keeping the container up until the host "
		 "goes, at most %.0f s (--spot-hold), then exit %d", (double)left_ms / 1000.0, sv->exit_status);
	loop_timer_arm(sv->loop, &sv->hold_timer, left_ms, on_hold_timer, sv);
	return true;
}

/* The payload and everything it left are gone. */
static void finish(struct supervisor *sv)
{
	loop_timer_cancel(sv->loop, &sv->kill_timer);
	loop_timer_cancel(sv->loop, &sv->settle_timer);
	loop_timer_cancel(sv->loop, &sv->watcher_timer);
	if (!hold(sv))
		report_finished(sv);
}

static void reap(struct supervisor *sv);

static void on_kill_timer(struct loop *loop, void *ctx)
{
	struct supervisor *sv = ctx;
	/* On a loaded machine the payload may have ended just as the timer fired, with
	 * its SIGCHLD still unread: reap first, so that a payload that did end within the
	 * grace period is never reported as killed. */
	enum phase before = sv->phase;
	reap(sv);
	if (sv->phase != before)
		return;
	sv->grace_over = true;
	if (sv->phase == PHASE_RUNNING) {
		log_warn("payload did not exit within the grace period: sending SIGKILL to its process group");
		kill(-sv->pid, SIGKILL);
		kill(sv->pid, SIGKILL);
	} else if (sv->phase == PHASE_CLEANUP) {
		int count = signal_descendants(getpid(), SIGKILL);
		if (count < 0)
			count = kill(-sv->pid, SIGKILL) == 0 ? 1 : 0;
		log_warn("processes left by the payload did not exit within the grace period: SIGKILL (%d)", count);
		loop_timer_arm(loop, &sv->settle_timer, KILL_SETTLE_MS, on_settle_timer, sv);
	}
}

static void on_settle_timer(struct loop *loop, void *ctx)
{
	struct supervisor *sv = ctx;
	(void)loop;
	log_error("processes survived SIGKILL for %d s (uninterruptible sleep?): exiting anyway", KILL_SETTLE_MS / 1000);
	finish(sv);
}

/* ---- the payload ended ---- */

static int status_from_wait(int wait_status)
{
	if (WIFEXITED(wait_status))
		return WEXITSTATUS(wait_status);
	return BA_EX_SIGNAL_BASE + WTERMSIG(wait_status);
}

/* Whatever the payload left must not outlive the job. When nothing is left, the
 * reaping that follows sees ECHILD and finishes. */
static void end_leftovers(struct supervisor *sv)
{
	char name[32];
	if (!has_children())
		return;
	int sig = sv->grace_over ? SIGKILL : SIGTERM;
	int count = signal_descendants(getpid(), sig);
	if (count < 0) /* no /proc: the payload's group is what we can still reach */
		count = kill(-sv->pid, sig) == 0 ? 1 : 0;
	if (count > 0)
		log_info("payload left processes running: sent %s%s", util_signal_name(sig, name, sizeof name),
			 sv->grace_over ? "" : ", SIGKILL when the grace period ends");
	/* Armed even when we saw nothing: finish() cancels it, and it bounds the wait if
	 * something we could not see is still running. */
	if (sv->grace_over)
		loop_timer_arm(sv->loop, &sv->settle_timer, KILL_SETTLE_MS, on_settle_timer, sv);
	else
		arm_grace(sv, sv->opts.grace_ms);
}

/* The Spot watcher lingers past its SIGTERM: it must not be mistaken for a leftover,
 * nor delay the job. */
static void on_watcher_timer(struct loop *loop, void *ctx)
{
	struct supervisor *sv = ctx;
	(void)loop;
	spotwatch_kill(sv->spot);
	/* Do not wait on it any longer: it is SIGKILLed and will be reaped with the rest. */
	sv->awaiting_watcher = false;
	end_leftovers(sv);
}

static void begin_cleanup(struct supervisor *sv, int wait_status)
{
	char name[32];
	int status = status_from_wait(wait_status);
	sv->phase = PHASE_CLEANUP;
	sv->exit_status = config_pairs_map(&sv->opts.remap_exit, status);
	if (WIFSIGNALED(wait_status))
		log_info("payload was killed by %s", util_signal_name(WTERMSIG(wait_status), name, sizeof name));
	else
		log_debug("payload exited with status %d", status);
	if (sv->exit_status != status)
		log_info("the payload's status %d is the agent's %d (--remap-exit)", status, sv->exit_status);
	/* Take the terminal back, so that our parent's shell finds it where it left it. */
	if (sv->terminal && tcgetpgrp(STDIN_FILENO) == sv->pid)
		tcsetpgrp(STDIN_FILENO, getpgrp());
	if (sv->hooks.exited)
		sv->hooks.exited(sv->hooks.ctx, sv->exit_status, wait_status);
	/* The watcher is ours, not a leftover of the payload's: the leftovers are looked
	 * for once it has been reaped (it answers SIGTERM at once). */
	if (spotwatch_running(sv->spot)) {
		spotwatch_stop(sv->spot);
		sv->awaiting_watcher = true;
		loop_timer_arm(sv->loop, &sv->watcher_timer, SPOTWATCH_STOP_MS, on_watcher_timer, sv);
		return;
	}
	end_leftovers(sv);
}

/* The payload stopped (Ctrl-Z on its terminal, or a forwarded SIGTSTP). When we are a
 * job of an interactive shell, stop too, so the shell gets its prompt back; its `fg`
 * then continues us, and we continue the payload. */
static void on_payload_stopped(struct supervisor *sv)
{
	sv->payload_stopped = true;
	if (getpid() == 1 || !sv->terminal)
		return;
	if (tcgetpgrp(STDIN_FILENO) == sv->pid)
		tcsetpgrp(STDIN_FILENO, getpgrp());
	kill(getpid(), SIGSTOP);
}

static void reap(struct supervisor *sv)
{
	for (;;) {
		int wait_status;
		pid_t pid = waitpid(-1, &wait_status, WNOHANG | WUNTRACED);
		if (pid == 0)
			return;
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD && sv->phase == PHASE_CLEANUP)
				finish(sv);
			return;
		}
		if (WIFSTOPPED(wait_status)) {
			if (pid == sv->pid)
				on_payload_stopped(sv);
			continue;
		}
		if (pid == sv->pid && sv->phase == PHASE_RUNNING) {
			begin_cleanup(sv, wait_status);
		} else if (spotwatch_reaped(sv->spot, pid, wait_status)) {
			if (sv->awaiting_watcher) {
				sv->awaiting_watcher = false;
				loop_timer_cancel(sv->loop, &sv->watcher_timer);
				end_leftovers(sv);
			}
		} else {
			log_debug("reaped pid %ld", (long)pid);
		}
	}
}

/* ---- signals to the agent ---- */

/* A signal the agent received, to the payload as --rewrite-signal spells it (0: not at
 * all). Job control follows what is sent: a payload not sent SIGCONT stays stopped. */
static void forward(struct supervisor *sv, int sig)
{
	char name[32], sent_name[32];
	int sent = config_pairs_map(&sv->opts.rewrite_signal, sig);
	/* A continued agent was stopped with its payload: give the terminal back before
	 * waking the payload, or it would stop again on its first read. */
	if (sent == SIGCONT && sv->terminal && getpid() != 1 && launch_in_foreground())
		tcsetpgrp(STDIN_FILENO, sv->pid);
	if (sent == 0) {
		log_debug("dropping %s (--rewrite-signal)", util_signal_name(sig, name, sizeof name));
		return;
	}
	if (sent != sig)
		log_debug("forwarding %s to the payload as %s (--rewrite-signal)", util_signal_name(sig, name, sizeof name),
			  util_signal_name(sent, sent_name, sizeof sent_name));
	else
		log_debug("forwarding %s to the payload", util_signal_name(sig, name, sizeof name));
	supervise_signal(sv, sent);
	/* A job stopped by job control is stopped as a whole group. */
	if (sent == SIGCONT && sv->payload_stopped && !sv->opts.group)
		kill(-sv->pid, SIGCONT);
	if (sent == SIGCONT)
		sv->payload_stopped = false;
}

/* A signal that stops the job: SIGTERM always (Batch's stop, which also starts the
 * grace period), other terminating signals unless --rewrite-signal drops them. */
static bool asks_to_stop(const struct supervisor *sv, int sig)
{
	return sig == SIGTERM || (signals_is_terminating(sig) && config_pairs_map(&sv->opts.rewrite_signal, sig) != 0);
}

static void handle_signal(struct supervisor *sv, int sig)
{
	char name[32];
	if (sig == SIGCHLD) {
		reap(sv);
		return;
	}
	switch (sv->phase) {
	case PHASE_IDLE:
		if (!signals_is_terminating(sig))
			return;
		log_info("received %s before the payload started", util_signal_name(sig, name, sizeof name));
		if (sv->hooks.interrupted)
			sv->hooks.interrupted(sv->hooks.ctx, sig);
		else
			loop_stop(sv->loop, BA_EX_SIGNAL_BASE + sig);
		return;
	case PHASE_RUNNING:
		if (asks_to_stop(sv, sig))
			sv->stop_requested = true;
		forward(sv, sig);
		/* Batch's SIGKILL comes whatever the payload was sent: the grace period starts
		 * on the SIGTERM received, rewritten or not. */
		if (sig == SIGTERM) {
			continue_if_stopped(sv);
			arm_grace(sv, sv->opts.grace_ms);
		}
		if (sig == SIGTERM && sv->hooks.stopping)
			sv->hooks.stopping(sv->hooks.ctx, sig);
		return;
	case PHASE_CLEANUP:
		if (asks_to_stop(sv, sig))
			sv->stop_requested = true;
		/* Asked to stop while we wait for leftovers: stop waiting. */
		if (signals_is_terminating(sig) && !sv->grace_over) {
			loop_timer_cancel(sv->loop, &sv->kill_timer);
			on_kill_timer(sv->loop, sv);
		}
		return;
	case PHASE_HOLD:
		/* Batch (or the host's shutdown) stops the container: it ends now, with the
		 * payload's status. Nothing is left to forward anything else to. */
		if (asks_to_stop(sv, sig)) {
			log_info("received %s while waiting for the host to go: exiting with the payload's status %d",
				 util_signal_name(sig, name, sizeof name), sv->exit_status);
			report_finished(sv);
		}
		return;
	case PHASE_DONE:
		return;
	}
}

static void on_signals(struct loop *loop, int fd, uint32_t events, void *ctx)
{
	struct supervisor *sv = ctx;
	(void)fd;
	(void)events;
	for (;;) {
		int sig;
		if (signals_next(&sig) != BA_OK) {
			loop_stop(loop, BA_EX_OSERR);
			return;
		}
		if (sig == 0)
			return;
		handle_signal(sv, sig);
	}
}

enum ba_status supervise_run(const struct supervise_opts *opts, const struct payload *payload, const struct supervise_hooks *hooks)
{
	struct loop *loop = NULL;
	struct supervisor *sv = NULL;
	enum ba_status rc = loop_create(&loop);
	if (rc != BA_OK)
		goto out;
	rc = supervise_create(&sv, loop, opts, hooks);
	if (rc != BA_OK)
		goto out;
	rc = supervise_spawn(sv, payload);
	if (rc != BA_OK)
		goto out;
	rc = loop_run(loop);
out:
	supervise_free(sv);
	loop_destroy(loop);
	return rc;
}
