"""A stranger who knows nothing and holds idle TCP connections to a manager
(issue 10, finding 2): it keeps COUNT connections open to HOST:PORT, sends nothing on
them, and reopens every one that is dropped, for as long as it runs.

    idle_flood.py HOST PORT COUNT

Prints "ready N" once COUNT connections have been attempted and N of them are open,
then "holding N opened M dropped D" about once a second; on SIGTERM it prints the last
line and exits 0. Standard library only (selectors, non-blocking connects)."""

import errno
import resource
import selectors
import signal
import socket
import sys
import time


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 256)), hard))
    try:  # this network namespace's own setting: room for the churn of reopened ones
        with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
            f.write("1024 65535\n")
    except OSError:
        pass
    sel = selectors.DefaultSelector()
    stats = {"opened": 0, "dropped": 0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def open_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            return False
        stats["opened"] += 1
        sel.register(s, selectors.EVENT_READ)
        return True

    def report(what):
        print(f"{what} {len(sel.get_map())} opened {stats['opened']} dropped {stats['dropped']}", flush=True)

    for _ in range(count):
        open_one()
    report("ready")
    last = time.monotonic()
    while not stop:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(4096)  # a busy or timeout frame, then EOF: it is dropped
            except OSError:
                data = b""
            if data:
                continue
            sel.unregister(s)
            s.close()
            stats["dropped"] += 1
        missing = count - len(sel.get_map())
        for _ in range(missing):
            if not open_one():
                time.sleep(0.01)  # out of ports or descriptors for a moment
                break
        if time.monotonic() - last >= 1:
            report("holding")
            last = time.monotonic()
    report("holding")


if __name__ == "__main__":
    main()
