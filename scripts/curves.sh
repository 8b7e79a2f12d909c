#!/usr/bin/env bash
# Throughput and latency curves: for each payload size, the relay (and NATS JetStream side
# by side, when a nats-server is found) driven open loop at a rising offered rate. Each row
# is one run: what was offered, what was delivered, and the latency from each package's
# scheduled time to its recipient's acknowledgement — so once the offered rate passes what
# the system can carry, the delivered rate flattens and the latency climbs. Prints Markdown;
# JSON reports go to $OUT (default target/curves).
#
#   scripts/curves.sh                       # every size, ~15 minutes with JetStream
#   SIZES="8k" RATES_8K="1000 3000" scripts/curves.sh
#   NATS_SERVER=/opt/nats210/usr/sbin/nats-server scripts/curves.sh   # see scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-target/curves}"
secs="${SECONDS_PER_RUN:-8}"
sizes="${SIZES:-8k 256k 4m mix}"
mkdir -p "$out"
source scripts/bench-common.sh

rates_for() {
  case "$1" in
    8k) echo "${RATES_8K:-500 1000 2000 3000 4000 5000}" ;;
    256k) echo "${RATES_256K:-50 100 200 400 600 800}" ;;
    4m) echo "${RATES_4M:-5 10 20 30 40 50}" ;;
    mix) echo "${RATES_MIX:-50 100 200 400 600 800}" ;;
  esac
}

echo "| target | size | offered/s | delivered/s | MiB/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU % | server peak RSS MiB | lost |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for size in $sizes; do
  for rate in $(rates_for "$size"); do
    for t in "${targets[@]}"; do
      target_opts "$t"
      name="$t-$size-$rate"
      rm -f "$out/$name.json"
      if ! "$lg" "${opts[@]}" --adapters 8 --size "$size" --rate "$rate" --duration "$secs" \
        --json "$out/$name.json" >"$out/$name.log" 2>&1 && [[ ! -s "$out/$name.json" ]]; then
        echo "| $t | $size | $rate | failed: see $out/$name.log |"
        continue
      fi
      python3 - "$out/$name.json" "$rate" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["relays"][0]
l = r["latency_ms"]
print(f'| {r["target"]} ({r["setup"]}) | {r["size"]} | {sys.argv[2]} | {r["delivered_per_second"]:.0f} | {r["megabytes_per_second"]:.1f} | {l["p50"]:.1f} | {l["p99"]:.1f} | {l["p999"]:.1f} | {l["max"]:.1f} | {s["cpu_percent"]:.0f} | {s["peak_rss_mib"]:.0f} | {r["lost"]} |')
PY
    done
  done
done
