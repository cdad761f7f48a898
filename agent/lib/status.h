/* Exit statuses of batch-agent, one table for the whole program.
 *
 * Every function that can fail returns one of these (curl style): BA_OK or the status
 * the process should exit with if the caller gives up. The numbers follow sysexits(3)
 * so that shells and Batch retry strategies can tell the cases apart; README.md and
 * --help document each one. */
#ifndef BATCH_AGENT_STATUS_H
#define BATCH_AGENT_STATUS_H

enum ba_status {
	BA_OK = 0,
	BA_EX_USAGE = 64,       /* bad command line */
	BA_EX_UNAVAILABLE = 69, /* manager unreachable, lost, or nodes missing at rendezvous */
	BA_EX_SOFTWARE = 70,    /* internal error: a bug in batch-agent */
	BA_EX_OSERR = 71,       /* a system call failed (fork, socket, epoll, ...) */
	/* The manager refused a worker for load (busy, timeout) or said no hello: the
	 * worker dials again; once --connect-timeout has passed it exits 69 instead. */
	BA_EX_TEMPFAIL = 75,
	BA_EX_PROTOCOL = 76,    /* the peer broke the protocol */
	BA_EX_NOPERM = 77,      /* authentication or registration refused */
	BA_EX_CONFIG = 78,      /* bad configuration or environment */
	BA_EX_NOEXEC = 126,     /* payload found but not executable */
	BA_EX_NOTFOUND = 127,   /* payload not found */
	/* 128 + N: how a shell reports a child that died of signal N, and the agent's
	 * status when signal N ended it before the payload ran. */
	BA_EX_SIGNAL_BASE = 128,
};

#endif
