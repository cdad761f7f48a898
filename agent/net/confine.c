/* batch-agent-net's steady-state seccomp filter (an allow-list, libseccomp). */
#include "confine.h"

#include <errno.h>
#include <seccomp.h>
#include <stdbool.h>
#include <string.h>

#include "log.h"

/* Measured with strace -f over the worker and main tests (test_mnp_*), after the payload
 * is forked, then widened by what the rarer paths of the same code use: malloc (mmap,
 * madvise), the orphan sweep of /proc (openat, getdents64), the hostfile (unlink), a
 * pool's membership file (rename), the
 * spot-watch helper (clone, execve, wait4; it is forked before this filter is loaded,
 * and a program exec'd under it would need its own start-up calls added), signals, timers, the
 * late admissions of worker pools (accept4, getrandom), and libc's own calls. Names this
 * machine does not have (stat on arm64, say) are skipped. */
static const char *const steady_state[] = {
	/* event loop, descriptors, sockets */
	"epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect6",
	"read", "readv", "pread64", "write", "writev", "close", "close_range", "fcntl", "ioctl", "dup", "dup2",
	"dup3", "pipe", "pipe2", "lseek", "socket", "socketpair", "bind", "listen", "connect", "accept", "accept4",
	"getsockname", "getpeername", "getsockopt", "setsockopt", "shutdown", "sendto", "recvfrom", "sendmsg",
	"recvmsg", "sendmmsg", "recvmmsg",
	/* files: /proc, the hostfile */
	"openat", "open", "getdents", "getdents64", "fstat", "newfstatat", "stat", "lstat", "statx", "readlink", "readlinkat",
	"access", "faccessat", "faccessat2", "unlink", "unlinkat", "fsync", "umask", "getcwd",
	/* a worker pool's membership file, replaced atomically, and its directory */
	"rename", "renameat", "renameat2", "rmdir", "fchmod",
	/* memory */
	"brk", "mmap", "munmap", "mremap", "mprotect", "madvise",
	/* processes: the payload, the spot-watch helper, the orphans */
	"clone", "clone3", "fork", "vfork", "execve", "wait4", "waitid", "kill", "tgkill", "tkill", "setpgid",
	"getpgid", "getpgrp", "setsid", "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid",
	"prctl", "prlimit64", "getrlimit", "setrlimit", "getrusage", "set_robust_list", "rseq", "sched_yield",
	"sched_getaffinity", "exit", "exit_group", "futex", "uname", "sysinfo",
	/* signals and time */
	"rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "rt_sigtimedwait", "sigaltstack", "signalfd4",
	"restart_syscall", "timerfd_create", "timerfd_settime", "timerfd_gettime", "clock_gettime",
	"clock_nanosleep", "nanosleep", "gettimeofday", "time", "getrandom",
#ifdef __SANITIZE_ADDRESS__
	/* LeakSanitizer stops the world with ptrace at exit. */
	"ptrace",
#endif
};

void confine_steady_state(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	int err = filter ? seccomp_attr_set(filter, SCMP_FLTATR_CTL_LOG, 1) : -ENOMEM;
	size_t allowed = 0;
	for (size_t i = 0; err == 0 && i < sizeof steady_state / sizeof steady_state[0]; i++) {
		int nr = seccomp_syscall_resolve_name(steady_state[i]);
		if (nr == __NR_SCMP_ERROR)
			continue;
		err = seccomp_rule_add(filter, SCMP_ACT_ALLOW, nr, 0);
		allowed++;
	}
	/* no_new_privs (libseccomp's default) lets a process without CAP_SYS_ADMIN install
	 * the filter; the payload, forked already, keeps its own setting. */
	if (err == 0)
		err = seccomp_load(filter);
	/* A kernel built without seccomp, or valgrind, which does not implement it. */
	if (err == -EOPNOTSUPP || err == -ENOSYS)
		log_info("seccomp is not available here (%s): batch-agent-net runs unconfined", strerror(-err));
	else if (err != 0)
		log_warn("cannot confine batch-agent-net with seccomp: %s; it runs unconfined", strerror(-err));
	else
		log_debug("confined to %zu system calls (seccomp; others fail with EPERM)", allowed);
	if (filter != NULL)
		seccomp_release(filter);
}
