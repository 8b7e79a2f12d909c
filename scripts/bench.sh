#!/usr/bin/env bash
# End-to-end benchmarks: the relay (trucd processes, adapters over mutual TLS) and, side by
# side on the same machine and payloads, NATS JetStream (nats-server from Debian's
# packages: apt install nats-server). Prints one Markdown row per run; JSON reports go to
# $OUT (default target/bench).
#
# JetStream runs twice when the nats-server is 2.10 or later: as it comes (plain TCP, files
# synced every two minutes) and like for like with the relay (mutual TLS, every message
# fsynced before its publish is acknowledged: `sync_interval: always`, which 2.9 refuses).
# Debian 12 ships 2.9.10; Debian 13's package (2.10.27) runs on Debian 12 unpacked:
#   curl -O http://deb.debian.org/debian/pool/main/n/nats-server/nats-server_2.10.27-1+b2_amd64.deb
#   dpkg -x nats-server_2.10.27-1+b2_amd64.deb /opt/nats210
#   NATS_SERVER=/opt/nats210/usr/sbin/nats-server scripts/bench.sh
#
#   scripts/bench.sh            # the whole matrix (about 4 minutes)
#   SECONDS_PER_RUN=30 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-target/bench}"
secs="${SECONDS_PER_RUN:-10}"
mkdir -p "$out"
source scripts/bench-common.sh

echo "| target | size | load | acknowledged | delivered/s | MiB/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU % | server peak RSS MiB | lost |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
run() {
  local name="$1"; shift
  rm -f "$out/$name.json"
  if ! "$lg" "$@" --duration "$secs" --json "$out/$name.json" >"$out/$name.log" 2>&1 \
    && [[ ! -s "$out/$name.json" ]]; then
    echo "| $name | failed: see $out/$name.log |"
    return 0
  fi
  python3 - "$out/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["relays"][0]
l = r["latency_ms"]
print(f'| {r["target"]} ({r["setup"]}) | {r["size"]} | {r["pace"]} | {r["acknowledged"]} | {r["delivered_per_second"]:.0f} | {r["megabytes_per_second"]:.1f} | {l["p50"]:.1f} | {l["p99"]:.1f} | {l["p999"]:.1f} | {l["max"]:.1f} | {s["cpu_percent"]:.0f} | {s["peak_rss_mib"]:.0f} | {r["lost"]} |')
PY
}
for t in "${targets[@]}"; do
  target_opts "$t"
  run "$t-8k-c64" "${opts[@]}" --adapters 8 --size 8k --concurrency 64
  run "$t-8k-1000" "${opts[@]}" --adapters 8 --size 8k --rate 1000
  run "$t-256k-c16" "${opts[@]}" --adapters 8 --size 256k --concurrency 16
  run "$t-4m-c4" "${opts[@]}" --adapters 8 --size 4m --concurrency 4
  run "$t-mix-c16" "${opts[@]}" --adapters 8 --size mix --concurrency 16
done
run "truc-8k-cross" --adapters 8 --size 8k --concurrency 64 --cross 0.5
