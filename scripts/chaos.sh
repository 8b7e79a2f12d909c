#!/usr/bin/env bash
# Kills trucd with SIGKILL at random moments under a sustained load, KILLS times (default
# 100), restarting it on its store each time; prints the load generator's summary: kills,
# acknowledged, delivered, lost (must be 0), duplicates delivered (allowed: at least once).
#
#   scripts/chaos.sh [KILLS] [extra truc-loadgen flags...]
#   scripts/chaos.sh 100 --size mix --cross 0.2
#
# The CI runs 10 kills (crates/truc-loadgen/tests/loadgen.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
kills="${1:-100}"
shift || true
cargo build --release --quiet -p trucd -p truc-loadgen
exec target/release/truc-loadgen --adapters 4 --concurrency 32 --duration 3600 \
  --kill-every 1 --kills "$kills" --drain 300 "$@"
