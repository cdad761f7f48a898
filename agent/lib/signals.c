/* Inherited signal state and the signalfd. */
#include "signals.h"

#include <errno.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "log.h"
#include "status.h"

static bool taken_over;
static int signal_fd = -1;
static sigset_t inherited_mask;
static sigset_t inherited_ignored;

enum ba_status signals_take_over(void)
{
	if (taken_over)
		return BA_OK;
	sigset_t blocked;
	sigemptyset(&inherited_ignored);
	sigemptyset(&blocked);
	if (sigprocmask(SIG_SETMASK, NULL, &inherited_mask) < 0)
		goto fail;
	for (int sig = 1; sig <= SIGRTMAX; sig++) {
		struct sigaction action;
		if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &action) < 0)
			continue;
		if (action.sa_handler == SIG_IGN)
			sigaddset(&inherited_ignored, sig);
		/* All of them, faults included: the kernel still delivers a real fault (and
		 * abort() unblocks SIGABRT), while a SIGSEGV or SIGABRT sent with kill(1) is
		 * the user's, to be forwarded like any other. */
		sigaddset(&blocked, sig);
	}
	/* An ignored SIGCHLD makes the kernel reap children for us, and we would never
	 * learn the payload's status. The payload gets the ignored SIGCHLD back. */
	if (sigismember(&inherited_ignored, SIGCHLD))
		signal(SIGCHLD, SIG_DFL);
	if (sigprocmask(SIG_SETMASK, &blocked, NULL) < 0)
		goto fail;
	signal_fd = signalfd(-1, &blocked, SFD_CLOEXEC | SFD_NONBLOCK);
	if (signal_fd < 0)
		goto fail;
	taken_over = true;
	return BA_OK;
fail:
	log_error("cannot take over signals: %m");
	return BA_EX_OSERR;
}

int signals_fd(void)
{
	return signal_fd;
}

enum ba_status signals_next(int *sig)
{
	*sig = 0;
	for (;;) {
		struct signalfd_siginfo info;
		ssize_t n = read(signal_fd, &info, sizeof info);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return BA_OK;
		if (n != (ssize_t)sizeof info) {
			log_error("reading signals: %m");
			return BA_EX_OSERR;
		}
		/* SIGPIPE from our own write is ours, not the user's; a signal the agent
		 * inherited as ignored stays ignored (e.g. SIGINT for `batch-agent ... &` in a
		 * script, SIGHUP under nohup), and the payload inherits it ignored too. */
		bool self_inflicted = (pid_t)info.ssi_pid == getpid() && info.ssi_signo != SIGCHLD;
		bool ignored = info.ssi_signo != SIGCHLD && sigismember(&inherited_ignored, (int)info.ssi_signo);
		if (self_inflicted || ignored)
			continue;
		*sig = (int)info.ssi_signo;
		return BA_OK;
	}
}

bool signals_is_terminating(int sig)
{
	return sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT;
}

int signals_next_terminating(void)
{
	for (;;) {
		int sig;
		if (signals_next(&sig) != BA_OK || sig == 0)
			return 0;
		if (signals_is_terminating(sig))
			return sig;
	}
}

void signals_restore_inherited(void)
{
	if (!taken_over)
		return;
	if (sigismember(&inherited_ignored, SIGCHLD))
		signal(SIGCHLD, SIG_IGN);
	sigprocmask(SIG_SETMASK, &inherited_mask, NULL);
}
