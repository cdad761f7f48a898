#!/usr/bin/env bash
# Installs what building, testing, the demo and the benchmarks need, from Debian's
# packages. Idempotent: apt runs only when something is missing, so the README's
# commands stay fast on a machine that already has everything.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libssl-dev libcurl4-openssl-dev libcjson-dev libseccomp-dev
  libcmocka-dev valgrind
  tini dumb-init catatonit
  iproute2 util-linux procps psmisc python3 ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
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
