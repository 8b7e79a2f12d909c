#!/usr/bin/env bash
# edXML metadata extraction benchmark: truc-edxml on 8 KiB, 1 MiB and 50 MiB packages, and
# libxml2's `xmllint --stream --noout` on the same 50 MiB file in the same run.
# Needs: xmllint (Debian: libxml2-utils; installed here if missing and we are root).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v xmllint >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y libxml2-utils || (apt-get update && apt-get install -y libxml2-utils)) >/dev/null
  else
    echo "xmllint not found: the libxml2 comparison is skipped" >&2
  fi
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%d)"
cargo bench -p truc-edxml --bench parse -- "$@"
