"""ctest fixture "container_images": makes, once per test run, everything the container
tests use (containertest.py lists it). The three debootstrap runs, network bound, go in
parallel with each other and with installing and packaging the build."""

import os
import shutil
import subprocess
import sys
import tarfile
import time

import containertest as ct
from agenttest import TestFailure

BUILD = os.environ.get("BATCH_AGENT_BUILD_DIR", "")
SOURCE = os.environ.get("BATCH_AGENT_SOURCE_DIR", "")
WRAPPER = os.path.join(ct.HERE, "runc-no-rlimits")


def log(msg):
    print("setup: %s" % msg)
    sys.stdout.flush()


def run(argv, **kw):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise TestFailure("%s: exit %d\n%s%s" % (" ".join(argv), r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
    return r


def start_roots():
    """One make-rootfs.sh per suite, in parallel; returns {suite: Popen}."""
    procs = {}
    for suite in ct.SUITES:
        tarball = os.path.join(ct.CACHE, "%s-minbase.tar" % suite)
        procs[suite] = subprocess.Popen([os.path.join(ct.HERE, "make-rootfs.sh"), suite, tarball],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
    return procs


def install_and_package():
    stage = ct.path("stage")
    shutil.rmtree(stage, ignore_errors=True)
    run(["cmake", "--install", BUILD, "--prefix", ct.PREFIX, "--strip"], env=dict(os.environ, DESTDIR=stage))
    packages = ct.path("packages")
    shutil.rmtree(packages, ignore_errors=True)
    run(["cpack", "-G", "DEB;TGZ", "-B", packages, "--config", os.path.join(BUILD, "CPackConfig.cmake")])
    for name in os.listdir(packages):
        if name.endswith((".deb", ".tar.gz")):
            log("package %s" % name)
    with tarfile.open(ct.path("stage.tar"), "w") as tar:
        tar.add(stage, arcname=".")


def busybox_root():
    """A root holding only a static busybox (and its applet links), /proc and /dev."""
    root = ct.path("roots", "busybox")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "bin"))
    for d in ("proc", "dev"):
        os.mkdir(os.path.join(root, d))
    shutil.copy2("/bin/busybox", os.path.join(root, "bin", "busybox"))
    applets = run(["/bin/busybox", "--list"]).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", applet))
    with tarfile.open(ct.path("roots", "busybox.tar"), "w") as tar:
        tar.add(root, arcname=".")


def choose_runtime():
    """Plain runc if it can start a container here; else the wrapper, if the failure is
    the known setrlimit one. Written to podman-runtime for every test."""
    r = ct.podman("run", "--rm", ct.image("ba-base-busybox"), "/bin/true", check=False, timeout=120)
    if r.returncode == 0:
        log("runtime: runc as it is")
        return
    if "rlimit" not in r.stderr:
        raise TestFailure("podman cannot start a container: %s" % r.stderr.strip())
    with open(ct.path("podman-runtime"), "w") as f:
        f.write(WRAPPER)
    log("runtime: %s (runc failed: %s)" % (WRAPPER, r.stderr.strip().splitlines()[-1]))
    ct.podman("run", "--rm", ct.image("ba-base-busybox"), "/bin/true", timeout=120)


def remove_old_images():
    """Last run's images, children first, so that re-imports leave no dangling layers
    behind on a machine that runs the suite every day."""
    for tags in ([ct.image("ba-worker-" + b) for b in ct.BASES], [ct.image("batch-agent")],
                 [ct.image("ba-base-" + b) for b in ct.BASES]):
        subprocess.run(["podman", "rmi", "--force", *tags], capture_output=True, timeout=300)


def main():
    ct.require_podman()
    if not BUILD or not SOURCE:
        raise TestFailure("BATCH_AGENT_BUILD_DIR and BATCH_AGENT_SOURCE_DIR must be set (ctest sets them)")
    t0 = time.monotonic()
    os.makedirs(ct.path("roots"), exist_ok=True)
    with open(ct.path("podman-runtime"), "w") as f:
        f.write("")  # plain runc until choose_runtime() knows better
    roots = start_roots()
    remove_old_images()
    install_and_package()
    busybox_root()
    ct.podman("import", ct.path("roots", "busybox.tar"), ct.image("ba-base-busybox"), timeout=120)
    choose_runtime()
    ct.podman("import", ct.path("stage.tar"), ct.image("batch-agent"), timeout=120)
    for suite, proc in roots.items():
        out, _ = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise TestFailure("debootstrap %s failed:\n%s" % (suite, out))
        tarball = os.path.join(ct.CACHE, "%s-minbase.tar" % suite)
        ct.podman("import", tarball, ct.image("ba-base-" + suite), timeout=300)
        log("image ba-base-%s (%.0fs)" % (suite, time.monotonic() - t0))
    for base in ct.BASES:
        ct.podman("build", "--quiet", "-f", os.path.join(SOURCE, "docker", "example", "Dockerfile"),
                  "--build-arg", "BASE=" + ct.image("ba-base-" + base),
                  "--build-arg", "BATCH_AGENT=" + ct.image("batch-agent"),
                  "-t", ct.image("ba-worker-" + base), os.path.join(SOURCE, "docker", "example"), timeout=300)
        log("image ba-worker-%s" % base)
    log("done in %.0fs" % (time.monotonic() - t0))


if __name__ == "__main__":
    try:
        main()
    except TestFailure as e:
        print("FAIL: %s" % e)
        sys.exit(1)
