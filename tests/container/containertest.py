"""Shared pieces of the container tests (standard library only, /usr/bin/python3).

Made once per test run by `setup_images.py` (ctest fixture "container_images"), under
BATCH_AGENT_CONTAINER_DIR (the build tree's container/ directory):

  stage/                the installed tree (cmake --install, prefix /usr/local)
  roots/SUITE.tar       Debian SUITE minbase roots (debootstrap; cached in
                        /var/cache/batch-agent-tests, see make-rootfs.sh)
  packages/*.deb        CPack's packages
  podman-runtime        empty, or the runtime wrapper podman needs here

and podman images in the localhost/ namespace, tagged for this build tree (TAG below), so
that suites run at once from two checkouts or build trees never share an image:

  ba-base-SUITE         the minbase roots; ba-base-busybox: only a static busybox
  batch-agent           FROM scratch, only the installed tree (what docker/Dockerfile makes)
  ba-worker-BASE        docker/example/Dockerfile built on each base: ENTRYPOINT the agent

(test_container_dockerfile.py builds docker/Dockerfile itself, and removes what it made.)
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import agenttest  # noqa: E402  (SCALE, check, wait_for)
import agentaws  # noqa: E402  (the suite's case runner)

SUITES = ("bullseye", "bookworm", "trixie")
BASES = SUITES + ("busybox",)
CACHE = os.environ.get("BATCH_AGENT_ROOTFS_CACHE", "/var/cache/batch-agent-tests")
WORK = os.environ.get("BATCH_AGENT_CONTAINER_DIR", "")
PREFIX = "/usr/local"
AGENT = PREFIX + "/bin/batch-agent"
AWS = PREFIX + "/libexec/batch-agent/batch-agent-aws"
COOKIE = "c0ffee" * 8
SCALE = agenttest.SCALE


def require_podman():
    """Skip (77) only where podman or root is truly absent, saying which."""
    if os.geteuid() != 0:
        agenttest.skip_script("container tests need root (podman, debootstrap, chroot)")
    for tool in ("podman", "runc", "debootstrap", "tmux"):
        if shutil.which(tool) is None:
            agenttest.skip_script("%s is not installed (scripts/install-deps.sh installs it)" % tool)
    if not WORK:
        raise agenttest.TestFailure("BATCH_AGENT_CONTAINER_DIR is not set (ctest sets it)")


def path(*parts):
    return os.path.join(WORK, *parts)


# One tag per build tree: a rerun replaces its own images, and nobody else's.
TAG = "t" + hashlib.sha1(os.path.realpath(WORK or ".").encode()).hexdigest()[:12]


def image(name):
    return "localhost/%s:%s" % (name, TAG)


def runtime_args():
    """--runtime WRAPPER when set-up found that plain runc cannot start containers here."""
    try:
        with open(path("podman-runtime")) as f:
            wrapper = f.read().strip()
    except FileNotFoundError:
        raise agenttest.TestFailure("container set-up did not run (ctest fixture container_images)")
    return ["--runtime", wrapper] if wrapper else []


def podman(*args, check=True, timeout=300, **kw):
    """podman ARGS with the runtime chosen at set-up; returns CompletedProcess (text)."""
    kw.setdefault("capture_output", True)
    kw.setdefault("stdin", subprocess.DEVNULL)
    r = subprocess.run(["podman", *runtime_args(), *args], text=True, timeout=timeout * SCALE, **kw)
    if check and r.returncode != 0:
        raise agenttest.TestFailure("podman %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))
    return r


def container_state(name):
    r = podman("inspect", "--format", "{{json .State}}", name, check=False, timeout=60)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def wait_running(name, timeout=60):
    agenttest.wait_for(lambda: (container_state(name) or {}).get("Running"), timeout,
                       "container %s to run" % name, interval=0.1)


def remove(*names):
    if names:
        podman("rm", "--force", "--time", "0", *names, check=False, timeout=120)


def run_cases(cases):
    """[(name, fn)]: the suite's runner (tests/lib/agentaws.py), one line per case,
    exit 1 on a failure."""
    agentaws.run_cases(cases)
