#!/usr/bin/env bash
# End-to-end benchmarks: the relay (trucd processes, adapters over mutual TLS) and, side by
# side on the same machine and payloads, NATS JetStream (nats-server from Debian's
# packages: apt install nats-server). Prints one Markdown row per run; JSON reports go to
# $OUT (default target/bench).
#
#   scripts/bench.sh            # the whole matrix (about 4 minutes)
#   SECONDS_PER_RUN=30 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-target/bench}"
secs="${SECONDS_PER_RUN:-10}"
mkdir -p "$out"
cargo build --release --quiet -p trucd -p truc-loadgen
lg=target/release/truc-loadgen
targets=(truc)
command -v nats-server >/dev/null && targets+=(jetstream)

echo "| target | size | load | acknowledged | delivered/s | MiB/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU % | server peak RSS MiB | lost |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
run() {
  local name="$1"; shift
  "$lg" "$@" --duration "$secs" --json "$out/$name.json" >/dev/null 2>&1 || true
  python3 - "$out/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["relays"][0]
l = r["latency_ms"]
print(f'| {r["target"]} | {r["size"]} | {r["pace"]} | {r["acknowledged"]} | {r["delivered_per_second"]:.0f} | {r["megabytes_per_second"]:.1f} | {l["p50"]:.1f} | {l["p99"]:.1f} | {l["p999"]:.1f} | {l["max"]:.1f} | {s["cpu_percent"]:.0f} | {s["peak_rss_mib"]:.0f} | {r["lost"]} |')
PY
}
for t in "${targets[@]}"; do
  run "$t-8k-c64" --target "$t" --adapters 8 --size 8k --concurrency 64
  run "$t-8k-1000" --target "$t" --adapters 8 --size 8k --rate 1000
  run "$t-256k-c16" --target "$t" --adapters 8 --size 256k --concurrency 16
  run "$t-4m-c4" --target "$t" --adapters 8 --size 4m --concurrency 4
  run "$t-mix-c16" --target "$t" --adapters 8 --size mix --concurrency 16
done
run "truc-8k-cross" --adapters 8 --size 8k --concurrency 64 --cross 0.5
