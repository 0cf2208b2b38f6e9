#!/usr/bin/env bash
# Counts the instructions the daemon spends relaying OneBot v11 → OneBot v11 messages, with
# the daemon run under callgrind by the benchmark's own OneBot scenario. Steal time on a
# shared host changes CPU time per message by ±20 % and more; it does not change this
# count, so two builds compare with one run each (docs/BENCHMARKS.md, issue 14 session 19).
#
# Under valgrind the daemon relays about 100 messages/s, so the store writer commits once
# per message instead of gathering: compare the async thread (the first line printed after
# the total), not the store writer.
#
# Usage: bench/scripts/instructions.sh [DAEMON] [MESSAGES]
#   DAEMON   the daemon binary (default target/release/qunbridge)
#   MESSAGES messages of the saturation phase (default 3000); a 1-second latency phase at
#            1,000/s adds about 1,000 more
# Needs valgrind (`apt-get install -y valgrind`) and `cargo build --release -p qunbridge-bench`.
set -euo pipefail
daemon=$(realpath "${1:-target/release/qunbridge}")
messages=${2:-3000}
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
bench=target/release/qunbridge-bench
[ -x "$bench" ] || { echo "$bench is missing: cargo build --release -p qunbridge-bench" >&2; exit 1; }
work=$(mktemp -d)
cat > "$work/daemon" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$work/callgrind.%p "$daemon" "\$@"
EOF
chmod +x "$work/daemon"
"$bench" --daemon "$work/daemon" --brokers embedded --only onebot \
  --onebot-messages "$messages" --latency-secs 1 --out "$work/report.md" > "$work/bench.log" 2>&1 \
  || { echo "the benchmark failed: $work/bench.log" >&2; exit 1; }
profile=$(ls "$work"/callgrind.* | head -n 1)
callgrind_annotate --inclusive=yes "$profile" 2>/dev/null \
  | grep -E 'PROGRAM TOTALS|tokio::runtime::runtime::Runtime::block_on' | head -n 2
echo "profile: $profile (callgrind_annotate --inclusive=yes, or --tree=calling)"
