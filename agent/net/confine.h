/* batch-agent-net's own seccomp filter, for its steady state: once the payload is
 * forked and the sockets are set up, the agent needs only its event loop's system calls.
 *
 * A call outside the list fails with EPERM and the kernel logs it (SECCOMP_FILTER_FLAG_LOG:
 * an audit record "type=SECCOMP" naming the call): this process may be PID 1, and killing
 * it (SCMP_ACT_KILL_PROCESS) would take the container down and lose the payload's exit
 * status, while an EPERM is an error path the agent already handles and reports. */
#ifndef BATCH_AGENT_CONFINE_H
#define BATCH_AGENT_CONFINE_H

/* Install the filter, once (later calls do nothing). A failure is a warning: the agent
 * works without it. */
void confine_steady_state(void);

#endif
