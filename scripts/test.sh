#!/usr/bin/env bash
# Runs every test, as CI does (.ci/run calls exactly this):
#   1. the Release build (static programs): unit and integration tests, then the fuzz
#      targets' smoke run (scripts/fuzz.sh --smoke, build/fuzz with clang; skipped, and
#      said so, only when clang with libFuzzer is absent);
#   2. the container tests: the installed tree in Debian bullseye, bookworm and trixie
#      minbase roots and a busybox-only root, under chroot and podman (tests/container);
#   3. the Sanitize build (ASan + UBSan, every report fatal): the unit and integration
#      suite, on dynamic programs (ASan cannot run in a static one);
#   4. the integration suite once more with the agent under valgrind --error-exitcode
#      (a Debug build, dynamic, so that valgrind sees the heap).
# Installs what it needs first. Options: --quick runs steps 1 and 2 only; --stress runs
# only the Release build's integration suite while two CPU-bound processes compete for
# the cores (as on a shared CI machine), with the timeout scale at 2.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

quick=0 stress=0
case "${1:-}" in
  --quick) quick=1 ;;
  --stress) stress=1 ;;
  "") ;;
  *) echo "usage: $0 [--quick | --stress]" >&2; exit 64 ;;
esac
jobs=$(nproc)

# The run's own temporary directory: test payloads and scripts live here, so valgrind
# can be told to leave exactly them (and system programs) alone, wherever the checkout is.
TMPDIR=$(mktemp -d /tmp/batch-agent-tests.XXXXXX)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

build() { # DIR TYPE
  cmake -S . -B "build/$1" -G Ninja -DCMAKE_BUILD_TYPE="$2" >/dev/null
  # Quiet when it works, everything when it does not.
  if ! ninja -C "build/$1" >"$TMPDIR/build-$1.log" 2>&1; then
    cat "$TMPDIR/build-$1.log"
    exit 1
  fi
}

total=0
run_suite() { # DIR [ctest args...]
  local dir=$1; shift
  (cd "build/$dir" && ctest --output-on-failure --timeout 600 -j "$jobs" "$@") | tee "$TMPDIR/ctest-$dir.log"
  # set -e and pipefail stop the run on a failure; here every test passed.
  local count
  count=$(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' "$TMPDIR/ctest-$dir.log")
  total=$((total + ${count:-0}))
}

# Two busy loops at the tests' own priority for as long as the suite runs: every wait
# in it must hold when half the machine, or more, is taken.
hogs=()
start_hogs() {
  for _ in 1 2; do
    sh -c 'while :; do :; done' &
    hogs+=("$!")
  done
  echo "stress: CPU hogs ${hogs[*]} running"
}
stop_hogs() {
  if [ "${#hogs[@]}" -gt 0 ]; then
    kill "${hogs[@]}" 2>/dev/null || true
    wait "${hogs[@]}" 2>/dev/null || true # their status is the signal's: not ours
  fi
  hogs=()
}
trap 'stop_hogs; rm -rf "$TMPDIR"' EXIT

if [ "$stress" = 1 ]; then
  echo "== Release build, integration tests under load (--stress)"
  build release Release
  stress_start=$(date +%s)
  start_hogs
  BATCH_AGENT_TIMEOUT_SCALE=2 run_suite release -L integration -LE container
  stop_hogs
  echo "stress run: $(( $(date +%s) - stress_start )) s"
  echo "ctest: $total passed, 0 failed"
  exit 0
fi

echo "== Release build: unit and integration tests"
build release Release
run_suite release -LE container

echo "== Fuzz smoke (clang, libFuzzer + ASan + UBSan): every target from its seeds"
fuzz_rc=0
./scripts/fuzz.sh --smoke || fuzz_rc=$?
if [ "$fuzz_rc" = 77 ]; then
  echo "fuzz smoke SKIPPED: clang with libFuzzer is not installed (scripts/install-deps.sh installs clang)"
elif [ "$fuzz_rc" != 0 ]; then
  exit "$fuzz_rc"
fi

echo "== Container tests (podman, chroot)"
container_start=$(date +%s)
run_suite release -L container
echo "container tests: $(( $(date +%s) - container_start )) s"

if [ "$quick" = 1 ]; then
  echo "ctest: $total passed, 0 failed"
  exit 0
fi

echo "== Sanitize build (ASan + UBSan): all tests"
build sanitize Sanitize
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=99 \
BATCH_AGENT_TIMEOUT_SCALE=3 \
  run_suite sanitize

echo "== Debug build under valgrind: integration tests"
build debug Debug
# Trace our own programs through fork and the chain-load to batch-agent-net, but not
# the payloads (system programs, Python, and what the tests write into $TMPDIR). Every
# process logs to a file of its own: an agent that a test kills at the end leaves no
# exit status, but its log still holds any error valgrind saw.
vglogs=$TMPDIR/valgrind
mkdir -p "$vglogs"
BATCH_AGENT_WRAPPER="valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite --trace-children=yes --trace-children-skip=/usr/*,/bin/*,/sbin/*,$TMPDIR/*,*python* --log-file=$vglogs/%p.log" \
  run_suite debug -L integration
bad=$(grep -l -E "ERROR SUMMARY: [1-9]|Invalid (read|write|free)|uninitialised|definitely lost: [1-9]" "$vglogs"/*.log 2>/dev/null || true)
if [ -n "$bad" ]; then
  echo "valgrind found errors in agents the tests did not wait for:"
  for f in $bad; do echo "--- $f"; cat "$f"; done
  exit 1
fi
echo "valgrind logs: $(ls "$vglogs" | wc -l) processes checked, no errors"
echo "ctest: $total passed, 0 failed"
