#!/usr/bin/env bash
# Builds the fuzz targets (tests/fuzz) with clang in build/fuzz and runs them.
#
#   scripts/fuzz.sh [--time SECONDS] [TARGET...]   campaigns: each target in turn for
#                                                  SECONDS (default 600), growing its
#                                                  corpus in build/fuzz/corpus/TARGET
#   scripts/fuzz.sh --smoke [TARGET...]            the suite's step: each target for
#                                                  SMOKE_SECONDS from its committed seeds
#   scripts/fuzz.sh --list                         the targets
#
# TARGET is a name such as frame or handshake (fuzz_frame); default every target built.
# Runs one target at a time at nice 19 (the machine is shared). Prints, per target,
# the executions, executions per second and crashes; a crash, leak, timeout or
# out-of-memory input is kept in build/fuzz/crashes/ (TARGET-crash-<sha1>, ...) and
# the script exits 1. Exit 77 when clang or libFuzzer is missing (nothing was run).
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE_SECONDS=14
seconds=600
smoke=0
list=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) seconds=$2; shift 2 ;;
    --smoke) smoke=1; seconds=$SMOKE_SECONDS; shift ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 64 ;;
    *) targets+=("$1"); shift ;;
  esac
done

# clang and its libFuzzer runtime: a one-line target must link.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' >"$probe/p.c"
if ! command -v clang >/dev/null || ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
  echo "fuzz.sh: clang with libFuzzer is not available (Debian's clang package provides it):" >&2
  cat "$probe/err" >&2 2>/dev/null || true
  exit 77
fi

build=build/fuzz
CC=clang cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Fuzz -DBUILD_TESTING=OFF >/dev/null
if ! nice ninja -C "$build" >"$probe/build.log" 2>&1; then
  cat "$probe/build.log"
  exit 1
fi

bin=$build/tests/fuzz
all=()
for f in "$bin"/fuzz_*; do
  [ -x "$f" ] && all+=("$(basename "$f" | sed 's/^fuzz_//')")
done
# Every target in the tree was built: a run over fewer would pass without them.
for src in tests/fuzz/fuzz_*.c; do
  if [ ! -x "$bin/$(basename "$src" .c)" ]; then
    echo "fuzz.sh: $src has no built target in $bin (see tests/fuzz/CMakeLists.txt)" >&2
    exit 1
  fi
done
if [ "$list" = 1 ]; then
  printf '%s\n' "${all[@]}"
  exit 0
fi
[ "${#targets[@]}" -eq 0 ] && targets=("${all[@]}")

crashes_dir=$build/crashes
logs=$build/logs
mkdir -p "$crashes_dir" "$logs"
# The caller's options, then ours: a later option wins, so leaks and UBSan stay fatal.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"

failed=0
start=$(date +%s)
printf '%-14s %14s %10s %8s %6s\n' target executions exec/s crashes s
for t in "${targets[@]}"; do
  exe=$bin/fuzz_$t
  if [ ! -x "$exe" ]; then
    echo "fuzz.sh: no target $t (fuzz.sh --list)" >&2
    exit 64
  fi
  seeds=tests/fuzz/corpus/$t
  if [ "$smoke" = 1 ] && [ ! -d "$seeds" ]; then
    echo "fuzz.sh: $seeds is missing: the smoke run replays every target's seeds" >&2
    exit 1
  fi
  if [ "$smoke" = 1 ]; then
    work=$probe/corpus-$t # from the committed seeds alone, every time
  else
    work=$build/corpus/$t # a campaign goes on from where the last one stopped
  fi
  mkdir -p "$work"
  opts=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
        -close_fd_mask=2 -artifact_prefix="$crashes_dir/$t-")
  [ -f "tests/fuzz/$t.dict" ] && opts+=(-dict="tests/fuzz/$t.dict")
  # Frames up to 65536 bytes (and a handshake's sealed ones) need inputs that long.
  case "$t" in frame|handshake|message) opts+=(-max_len=70000) ;; esac
  before=$(ls "$crashes_dir" | grep -c "^$t-" || true)
  t0=$(date +%s)
  rc=0
  nice -n 19 "$exe" "${opts[@]}" "$work" $( [ -d "$seeds" ] && echo "$seeds" ) >"$logs/$t.log" 2>&1 || rc=$?
  elapsed=$(( $(date +%s) - t0 ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  after=$(ls "$crashes_dir" | grep -c "^$t-" || true)
  found=$(( after - before ))
  [ "$rc" -ne 0 ] && [ "$found" -eq 0 ] && found=1 # died without an artifact: still a failure
  printf '%-14s %14s %10s %8s %6s\n' "$t" "${runs:-?}" "$(( ${runs:-0} / (elapsed > 0 ? elapsed : 1) ))" "$found" "$elapsed"
  if [ "$found" -ne 0 ]; then
    failed=1
    echo "fuzz.sh: $t failed (exit $rc); log $logs/$t.log:" >&2
    grep -E "ERROR|SUMMARY|FUZZ_CHECK|Test unit written" "$logs/$t.log" | head -20 >&2 || true
  fi
done
echo "fuzz.sh: ${#targets[@]} target(s) in $(( $(date +%s) - start )) s"
exit "$failed"
