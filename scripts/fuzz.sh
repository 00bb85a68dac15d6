#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets; or those named) for FUZZ_SECONDS (default 60)
# each, with cargo-fuzz on nightly, and prints one line of figures per target. Fails if any
# target finds a crash (a panic, an abort, a sanitizer report, an input taking over 10 s):
# the input is in fuzz/artifacts/TARGET/, see docs/fuzzing.md to reproduce it.
#   scripts/fuzz.sh [--smoke] [TARGET...]
# --smoke (make fuzz-smoke): 20 s each by default; without nightly it skips, loudly, except
# under CI=true, where it fails.
# libFuzzer's corpus grows in fuzz/corpus/TARGET (not committed); the committed seeds in
# fuzz/seeds/TARGET are read, never written. The build goes to $CARGO_TARGET_DIR/fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=
if [ "${1:-}" = --smoke ]; then
  smoke=1
  shift
fi
seconds=${FUZZ_SECONDS:-$([ -n "$smoke" ] && echo 20 || echo 60)}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(config registry_codec discovery grpclb ffi ads)
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  if [ -n "$smoke" ] && [ "${CI:-}" != true ]; then
    echo "fuzz: ############################################################" >&2
    echo "fuzz: SKIPPED: no nightly toolchain (rustup toolchain install nightly)" >&2
    echo "fuzz: ############################################################" >&2
    exit 0
  fi
  echo "fuzz: FAILED: the fuzz targets need a nightly toolchain (rustup toolchain install nightly)$([ -n "$smoke" ] && echo '; under CI=true the smoke does not skip')" >&2
  exit 1
fi
scripts/setup.sh --fuzz

target_dir=${CARGO_TARGET_DIR:-$PWD/target}/fuzz
started=$(date +%s)
cargo +nightly fuzz build --fuzz-dir fuzz --target-dir "$target_dir" >&2
echo "fuzz: built in $(($(date +%s) - started)) s" >&2

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log=$logs/$target.log
  echo "fuzz: $target for ${seconds} s" >&2
  if cargo +nightly fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$target" \
      "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    failed+=("$target")
    grep -E '^(==[0-9]+==|thread |.*panicked at)|Test unit written to|artifact_prefix' "$log" | head -20 >&2 || true
    tail -40 "$log" >&2
  fi
  # libFuzzer's last status line: "#RUNS DONE cov: C ft: F corp: N/SIZE exec/s: E rss: R".
  status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(echo "$status" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$status" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
  corp=$(echo "$status" | sed -n 's/.* corp: \([^ ]*\).*/\1/p')
  summary+=("fuzz $target: $result, ${runs:-?} runs in ${seconds} s, ${execs:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}")
done

printf '%s\n' "${summary[@]}"
# The plain closing line: targets without a crash, targets with one.
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: a crash in ${failed[*]}: see fuzz/artifacts/ and docs/fuzzing.md" >&2
  exit 1
fi
