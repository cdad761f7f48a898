#!/usr/bin/env bash
# Installs what building, testing, the demo and the benchmarks need, from Debian's
# packages. Idempotent: apt runs only when something is missing, so the README's
# commands stay fast on a machine that already has everything.
# Options: --build installs only what building needs (docker/Dockerfile's builder stage).
set -euo pipefail

build_packages=(
  build-essential cmake ninja-build pkg-config
  libssl-dev libcurl4-openssl-dev libcjson-dev libseccomp-dev
  # static programs: cJSON is compiled from Debian's source package (no libcjson.a);
  # the AWS helper bundle copies the build machine's CA store
  dpkg-dev ca-certificates
)
packages=(
  "${build_packages[@]}"
  libcmocka-dev valgrind
  # fuzz targets (tests/fuzz, scripts/fuzz.sh): clang, and the runtimes of libFuzzer,
  # ASan and UBSan for it (a package of its own that clang does not depend on)
  clang libclang-rt-dev
  tini dumb-init catatonit
  iproute2 util-linux procps psmisc python3
  # container tests (tests/container): images made with debootstrap, run by podman
  # (the network stack named, as on the machine they were written on: CNI, not netavark)
  podman runc containernetworking-plugins debootstrap tmux busybox-static uidmap slirp4netns
  fuse-overlayfs iptables
  # test certificates for the TLS cases
  openssl
  # packages (CPack's .deb computes its dependencies with dpkg-shlibdeps)
  file
)

# `apt-get source cjson` at build time needs the source index of this machine's suite.
src_list=/etc/apt/sources.list.d/batch-agent-deb-src.sources
need_update=0
if ! apt-get indextargets --format '$(CREATED_BY)' 2>/dev/null | grep -qx Sources; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: no deb-src entry (apt-get source cjson needs one); run as root to add $src_list" >&2
    exit 1
  fi
  . /etc/os-release
  cat >"$src_list" <<SOURCES
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  need_update=1
fi
[ "${1:-}" = "--build" ] && packages=("${build_packages[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  [ "$need_update" = 1 ] && apt-get update -qq
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
