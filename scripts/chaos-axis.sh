#!/usr/bin/env bash
# Upstream faults under load: half the packages cross the national axis (simulator) while it
# fails 30 % of calls, adds 20 ms to each, cuts 5 % of connections mid-answer, loses 20 % of
# status acknowledgements, lists every entry twice, and goes down for 60 s (starting 20 s in,
# so much of it falls in the drain). Prints the load generator's summary: acknowledged,
# delivered, lost (must be 0), duplicates.
#
#   scripts/chaos-axis.sh                  # 60 s of load, then the drain
#   scripts/chaos-axis.sh --duration 120   # longer (extra flags go to truc-loadgen)
#
# Disk: the two relays keep every package (retention purges only after days), about 30 KB
# per package each at this load; 60 s needs about 8 GB free in the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p trucd -p truc-loadgen
exec target/release/truc-loadgen --adapters 4 --size 8k --concurrency 16 --cross 0.5 \
  --duration 60 --drain 600 \
  --axis-faults '{"error_rate":{"*":0.3},"latency_ms":20,"reset_rate":0.05,"lose_ack_rate":0.2,"duplicate_list":true}' \
  --axis-outage 60 --axis-outage-at 20 "$@"
