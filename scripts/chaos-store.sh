#!/usr/bin/env bash
# Crash drill for truc-store: a child process writes and acknowledges submissions and is
# killed with SIGKILL at random moments, KILLS times (default 1000); after each kill the
# store must open and hold every acknowledged submission intact. Prints a one-line summary.
#   scripts/chaos-store.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
kills="${1:-1000}"
TRUC_CRASH_KILLS="$kills" cargo test --release -p truc-store --test crash \
  sigkill_never_loses_an_acknowledged_submission -- --exact --nocapture 2>&1 \
  | grep -E "crash summary|panicked|test result"
