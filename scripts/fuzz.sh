#!/usr/bin/env bash
# `make fuzz`: builds the corpora (scripts/fuzz-corpus.py), then runs each libFuzzer target for
# FUZZ_SECONDS, one after the other (one core), and prints one row per target: seconds, CPU
# seconds, runs, coverage, crashes. Stable toolchain: cargo fuzz needs nightly flags (-Zsanitizer, -Cpasses),
# which RUSTC_BOOTSTRAP=1 allows on stable. A crash leaves its input in fuzz/artifacts/<target>/
# and makes the run exit 1 after every target has run.
set -uo pipefail

cd "$(dirname "$0")/.."
CARGO_FUZZ=${CARGO_FUZZ:-.tools/cargo/bin/cargo-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
# Extra cargo fuzz flags, e.g. FUZZ_FLAGS=-a for debug assertions (overflow checks; a full
# rebuild of every crate with them).
FUZZ_FLAGS=${FUZZ_FLAGS:-}
ALL_TARGETS="nginx_parse render webhook agent_apply agent_ingest agent_report"
FUZZ_TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
export RUSTC_BOOTSTRAP=1

python3 scripts/fuzz-corpus.py >/dev/null || exit 2
mkdir -p fuzz/logs
rows=()
failed=0
for target in $FUZZ_TARGETS; do
  log=fuzz/logs/$target.log
  # shellcheck disable=SC2086
  if ! "$CARGO_FUZZ" build $FUZZ_FLAGS -O --sanitizer "$FUZZ_SANITIZER" "$target" >"$log" 2>&1; then
    echo "building $target failed; see $log" >&2
    tail -20 "$log" >&2
    exit 2
  fi
  mkdir -p "fuzz/artifacts/$target"
  before=$(ls "fuzz/artifacts/$target" | wc -l)
  start=$(date +%s)
  # The binary just built, run directly: `cargo fuzz run` would rebuild first when a source
  # changed since the build, and that compile would count as fuzzing time.
  bin=""
  for dir in "${CARGO_TARGET_DIR:-}" fuzz/target target; do
    candidate="$dir/x86_64-unknown-linux-gnu/release/$target"
    if [ -n "$dir" ] && [ -x "$candidate" ]; then bin=$candidate; break; fi
  done
  if [ -z "$bin" ]; then
    echo "cannot find the $target binary cargo fuzz built; see $log" >&2
    exit 2
  fi
  # The CPU time (user + system) is what the issue's goal counts: on a busy machine a run of
  # FUZZ_SECONDS may get less than FUZZ_SECONDS of a core.
  cpu_file=$(mktemp)
  TIMEFORMAT='%U %S'
  {
    time "$bin" -artifact_prefix="fuzz/artifacts/$target/" \
      -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 -close_fd_mask=1 "fuzz/corpus/$target" >>"$log" 2>&1
  } 2>"$cpu_file"
  rc=$?
  cpu=$(awk '{ printf "%.0f", $1 + $2 }' "$cpu_file")
  rm -f "$cpu_file"
  seconds=$(( $(date +%s) - start ))
  after=$(ls "fuzz/artifacts/$target" | wc -l)
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  crashes=$(( after - before ))
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes="rc=$rc"; fi
  if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then failed=1; fi
  rows+=("$(printf '%-14s %8s %12s %12s %9s %8s' "$target" "$seconds" "${cpu:-?}" "${runs:-?}" "${cov:-?}" "$crashes")")
done

printf '\n%-14s %8s %12s %12s %9s %8s\n' target seconds cpu-seconds runs coverage crashes
printf '%s\n' "${rows[@]}"
if [ "$failed" -ne 0 ]; then
  echo "crashes: inputs in fuzz/artifacts/<target>/, logs in fuzz/logs/; reproduce with" \
    "RUSTC_BOOTSTRAP=1 $CARGO_FUZZ run -O <target> <artifact>" >&2
  exit 1
fi
