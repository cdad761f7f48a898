#!/usr/bin/env bash
# make-rootfs.sh SUITE TARBALL: a Debian SUITE minbase root (debootstrap), as a tarball
# that `podman import` takes. The tarball is cached: debootstrap is network bound and
# takes minutes, the tarball of a suite does not change within a test run, and a second
# run on the same machine starts from it. Delete it to get a fresh one.
set -euo pipefail
suite=$1 out=$2
if [ -s "$out" ]; then
  exit 0
fi
mkdir -p "$(dirname "$out")"
root=$(mktemp -d "$(dirname "$out")/root-$suite.XXXXXX")
trap 'rm -rf "$root"' EXIT
log="$out.log"
if ! debootstrap --variant=minbase "$suite" "$root" http://deb.debian.org/debian >"$log" 2>&1; then
  echo "make-rootfs: debootstrap $suite failed; last lines of $log:" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
# apt's lists and package cache are the bulk of the tree and no test needs them.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
