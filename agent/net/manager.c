/* The manager roles' shared loop and end; see manager.h. */
#include "manager.h"

#include <signal.h>
#include <stdio.h>

#include "log.h"
#include "proto.h"
#include "util.h"

#define REPORT_MARGIN_MS 1000 /* after the grace period, for the last exit reports to arrive */

static enum proto_err build_shutdown(void *arg, cJSON **out)
{
	struct manager *m = arg;
	return proto_msg_shutdown(m->cfg->grace_ms, m->farewell, out);
}

static void on_report_timer(struct loop *loop, void *ctx)
{
	struct manager *m = ctx;
	(void)loop;
	m->hooks.silent(m->hooks.ctx);
	loop_stop(m->loop, m->exit_status);
}

void manager_maybe_stop(struct manager *m)
{
	if (m->phase == MANAGER_ENDING && m->payload_finished && m->hooks.owing(m->hooks.ctx) == 0)
		loop_stop(m->loop, m->exit_status);
}

void manager_close_door(struct manager *m, const char *why)
{
	listener_close_door(m->ls, why);
	cookie_wipe(&m->cookie);
}

/* How long the peers' reports may take. Normally a grace period from now: the peers
 * were just told to shut down. After Batch's SIGTERM its SIGKILL is 30 s away whatever
 * ended the payload, and the peers of an MNP job got the same SIGTERM: the reports get
 * what is left of the grace period that SIGTERM started, not a new one, or a payload
 * that used all its grace would make us wait twice (2 x 25 s + 1 s > 30 s). */
static int64_t report_wait_ms(const struct manager *m)
{
	int64_t wait_ms = m->cfg->grace_ms + REPORT_MARGIN_MS;
	if (m->stopped_ms == 0)
		return wait_ms;
	wait_ms = m->stopped_ms + wait_ms - util_now_ms();
	return wait_ms > 0 ? wait_ms : 0;
}

static void begin_shutdown(struct manager *m, const char *reason)
{
	if (m->phase == MANAGER_ENDING)
		return;
	m->phase = MANAGER_ENDING;
	loop_timer_cancel(m->loop, &m->wait_timer);
	manager_close_door(m, reason);
	long owing = m->hooks.owing(m->hooks.ctx);
	if (owing > 0)
		log_info("%s: telling %ld %s%s to shut down", reason, owing, m->peer_noun, owing == 1 ? "" : "s");
	listener_broadcast(m->ls, build_shutdown, m);
	loop_timer_arm(m->loop, &m->report_timer, report_wait_ms(m), on_report_timer, m);
	manager_maybe_stop(m);
}

void manager_fail(struct manager *m, enum ba_status rc, const char *reason)
{
	m->exit_status = rc;
	m->payload_finished = true;
	begin_shutdown(m, reason);
}

static void on_payload_exited(void *ctx, int exit_status, int wait_status)
{
	struct manager *m = ctx;
	char reason[64];
	(void)wait_status;
	log_info("%s exited with status %d", m->payload_name, exit_status);
	/* The report timer may stop us before on_payload_finished, while what the payload
	 * left behind is still being killed: its status must be ours by then. */
	m->exit_status = m->forced_status != BA_OK ? m->forced_status : (enum ba_status)exit_status;
	snprintf(reason, sizeof reason, "%s ended", m->payload_name);
	begin_shutdown(m, reason);
}

static void on_payload_finished(void *ctx, int exit_status)
{
	struct manager *m = ctx;
	m->exit_status = m->forced_status != BA_OK ? m->forced_status : (enum ba_status)exit_status;
	m->payload_finished = true;
	manager_maybe_stop(m);
}

/* Batch is stopping the job: when, for the reports' deadline. */
static void note_stopped(struct manager *m)
{
	if (m->stopped_ms == 0)
		m->stopped_ms = util_now_ms();
}

static void on_interrupted(void *ctx, int sig)
{
	struct manager *m = ctx;
	note_stopped(m);
	if (m->hooks.stopping)
		m->hooks.stopping(m->hooks.ctx);
	manager_fail(m, BA_EX_SIGNAL_BASE + sig, "interrupted");
}

static void on_stopping(void *ctx, int sig)
{
	struct manager *m = ctx;
	(void)sig;
	note_stopped(m);
	if (m->hooks.stopping)
		m->hooks.stopping(m->hooks.ctx);
}

void manager_stop_payload(struct manager *m, enum ba_status rc, const char *reason)
{
	if (m->forced_status == BA_OK)
		m->forced_status = rc;
	supervise_terminate(m->sv, SIGTERM, m->cfg->grace_ms, reason);
}

enum ba_status manager_spawn(struct manager *m, const struct payload *payload)
{
	enum ba_status rc = listener_spawn_payload(m->ls, m->sv, payload);
	if (rc == BA_OK)
		m->phase = MANAGER_RUNNING;
	return rc;
}

enum ba_status manager_set_up(struct manager *m, const struct config *cfg, const struct admit_job *job,
			      const struct listener_hooks *peer_hooks)
{
	struct supervise_opts opts = supervise_opts_from_config(cfg);
	/* No Spot hold here: a manager's end is its peers' reports, bounded by the report
	 * timer, and it exits with PROGRAM's status, which the retry rule for 143 covers
	 * (README, "Spot interruptions and retries"). */
	opts.spot_hold_ms = CONFIG_SPOT_HOLD_OFF;
	struct supervise_hooks hooks = { .ctx = m, .exited = on_payload_exited, .finished = on_payload_finished,
					 .interrupted = on_interrupted, .stopping = on_stopping };
	struct admit_job admission = *job;
	m->cfg = cfg;
	admission.cookie = &m->cookie;
	enum ba_status rc = cookie_load(cfg, &m->cookie);
	if (rc == BA_OK)
		rc = loop_create(&m->loop);
	if (rc == BA_OK)
		rc = supervise_create(&m->sv, m->loop, &opts, &hooks);
	if (rc == BA_OK)
		rc = listener_start(&m->ls, m->loop, cfg, &admission, peer_hooks);
	return rc;
}

void manager_free(struct manager *m)
{
	listener_free(m->ls);
	supervise_free(m->sv);
	loop_destroy(m->loop);
	cookie_wipe(&m->cookie);
	m->ls = NULL;
	m->sv = NULL;
	m->loop = NULL;
}
