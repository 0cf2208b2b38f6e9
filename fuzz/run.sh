#!/usr/bin/env bash
# Builds every fuzz target of qunbridge and runs each for a bounded time, one after another.
#
#   fuzz/run.sh [SECONDS]          # default: $FUZZ_SECONDS, else 600 per target
#   FUZZ_TARGETS="onebot11_frame config_parser" fuzz/run.sh 60
#
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). Each target starts from its committed seeds (fuzz/seeds/<t>)
# and its growing local corpus (fuzz/corpus/<t>, not committed), with the dictionary
# fuzz/dicts/<t>.dict of its protocol's words. An input that panics, takes
# longer than FUZZ_TIMEOUT seconds (default 10) or needs more than FUZZ_RSS_MB of memory
# (default 2048) is a finding: libFuzzer saves it under fuzz/artifacts/<t>/ and this script
# exits non-zero once every target has run. Logs go to $FUZZ_LOG_DIR (default
# fuzz/logs), one per target. Extra libFuzzer flags can be given in FUZZ_ARGS.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
seconds="${1:-${FUZZ_SECONDS:-600}}"
timeout="${FUZZ_TIMEOUT:-10}"
rss_mb="${FUZZ_RSS_MB:-2048}"
log_dir="${FUZZ_LOG_DIR:-$here/logs}"
targets="${FUZZ_TARGETS:-onebot11_frame onebot12_frame dingtalk_stream_frame config_parser}"
# Shares the machine politely unless told otherwise.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "run.sh: SECONDS must be a positive whole number, not '$seconds'" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "run.sh: needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
  exit 2
fi

cd "$root" || exit 2
mkdir -p "$log_dir"
echo "fuzz: building ${targets// /, }"
# shellcheck disable=SC2086
for target in $targets; do
  if ! cargo +nightly fuzz build --fuzz-dir "$here" "$target"; then
    echo "fuzz: building $target failed" >&2
    exit 2
  fi
done

failed=()
summary=()
for target in $targets; do
  corpus="$here/corpus/$target"
  mkdir -p "$corpus" "$here/artifacts/$target"
  log="$log_dir/$target.log"
  echo "fuzz: $target for ${seconds}s (log: $log)"
  dict=()
  [ -f "$here/dicts/$target.dict" ] && dict=(-dict="$here/dicts/$target.dict")
  # shellcheck disable=SC2086
  cargo +nightly fuzz run --fuzz-dir "$here" "$target" "$corpus" "$here/seeds/$target" -- \
    -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss_mb" \
    -print_final_stats=1 "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
  status=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')"
  if [ -z "$execs" ]; then
    execs="$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]*')"
  fi
  line="$target: ${execs:-?} execs in ${seconds}s"
  if [ "$status" -ne 0 ]; then
    line="$line: FAILED (exit $status; see $log and $here/artifacts/$target/)"
    failed+=("$target")
    grep -E '^(==[0-9]+== ?ERROR|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)' "$log" | head -8
  fi
  echo "fuzz: $line"
  summary+=("$line")
done

echo
echo "fuzz summary:"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]}" >&2
  exit 1
fi
