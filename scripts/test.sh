#!/usr/bin/env bash
# Runs every test, as CI does (.ci/run calls exactly this):
#   1. the Release build: unit and integration tests;
#   2. the Sanitize build (ASan + UBSan, every report fatal): the same suite;
#   3. the integration suite once more with the agent under valgrind --error-exitcode.
# Installs what it needs first. Options: --quick runs step 1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

quick=0
[ "${1:-}" = "--quick" ] && quick=1
jobs=$(nproc)

build() { # DIR TYPE
  cmake -S . -B "build/$1" -G Ninja -DCMAKE_BUILD_TYPE="$2" >/dev/null
  ninja -C "build/$1" >/dev/null
}

run_suite() { # DIR [ctest args...]
  local dir=$1; shift
  (cd "build/$dir" && ctest --output-on-failure --timeout 600 -j "$jobs" "$@")
}

echo "== Release build: all tests"
build release Release
run_suite release

[ "$quick" = 1 ] && exit 0

echo "== Sanitize build (ASan + UBSan): all tests"
build sanitize Sanitize
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=99 \
  run_suite sanitize

echo "== Debug build under valgrind: integration tests"
build debug Debug
# Trace our own programs through fork and the chain-load to batch-agent-net, but not
# the payloads (system programs, Python, and test scripts in /tmp).
BATCH_AGENT_WRAPPER="valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite --trace-children=yes --trace-children-skip=/usr/*,/bin/*,/sbin/*,/tmp/*,*python*" \
  run_suite debug -L integration
