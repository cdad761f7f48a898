"""docker/Dockerfile, built as a user would (podman build from the repository), with the
bookworm minbase image as its builder base (no image can be pulled here; the builder
installs its packages with apt, as debootstrap fetched the roots). Checks that the final
stage holds exactly the installed tree and nothing else, and that a worker image made
from it with docker/example/Dockerfile runs on the busybox-only base."""

import os
import subprocess
import tarfile

import containertest as ct
from agenttest import check, check_eq

SOURCE = os.environ.get("BATCH_AGENT_SOURCE_DIR", "")


def files_of_image(img):
    """Paths of the files in img, from `podman export` of a container made from it."""
    c = "ba-test-%d-export" % os.getpid()
    ct.podman("create", "--name", c, img, "/usr/local/bin/batch-agent", timeout=120)
    try:
        out = ct.path("dockerfile-export.tar")
        ct.podman("export", "--output", out, c, timeout=300)
        with tarfile.open(out) as tar:
            return {m.name.lstrip("./") for m in tar.getmembers() if not m.isdir()}
    finally:
        ct.remove(c)


def files_of_stage():
    stage = ct.path("stage")
    found = set()
    for top, _, names in os.walk(stage):
        for n in names:
            found.add(os.path.relpath(os.path.join(top, n), stage))
    return found


def main():
    ct.require_podman()
    img, worker = ct.image("batch-agent-dockerfile"), ct.image("ba-worker-dockerfile")
    ct.podman("build", "--quiet", "-f", os.path.join(SOURCE, "docker", "Dockerfile"),
              "--build-arg", "BUILDER=" + ct.image("ba-base-bookworm"), "-t", img, SOURCE, timeout=900)
    try:
        # Runtime files podman adds to every container (mount points) are not the image's.
        added = {"etc/hosts", "etc/resolv.conf", "etc/hostname", "run/.containerenv"}
        got = files_of_image(img) - added
        want = files_of_stage()
        check_eq(sorted(got - want), [], "files in the image that the installed tree does not have")
        check_eq(sorted(want - got), [], "files of the installed tree missing from the image")
        ct.podman("build", "--quiet", "-f", os.path.join(SOURCE, "docker", "example", "Dockerfile"),
                  "--build-arg", "BASE=" + ct.image("ba-base-busybox"), "--build-arg", "BATCH_AGENT=" + img,
                  "-t", worker, os.path.join(SOURCE, "docker", "example"), timeout=300)
        r = ct.podman("run", "--rm", worker, check=False, timeout=120)
        check(r.returncode == 0 and "payload running on" in r.stdout, "the example worker runs: %d %s %s" % (
            r.returncode, r.stdout, r.stderr))
        r = ct.podman("run", "--rm", worker, "--", "/bin/sh", "-c", "exit 3", check=False, timeout=120)
        check_eq(r.returncode, 3, "exit status through the Dockerfile's agent")
    finally:
        subprocess.run(["podman", "rmi", "--force", img, worker], capture_output=True, timeout=300)


if __name__ == "__main__":
    ct.run_cases([("dockerfile", main)])
