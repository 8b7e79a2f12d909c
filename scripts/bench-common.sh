# Sourced by scripts/bench.sh and scripts/curves.sh (from the repository root): builds the
# relay and the load generator, and finds which targets can run here.
#   lg       the load generator
#   nats     the nats-server binary ($NATS_SERVER, default from PATH)
#   targets  truc, plus jetstream when nats-server is found, plus jetstream-durable when it
#            is 2.10 or later (2.9 refuses `sync_interval`)
#   target_opts T   sets the array `opts` to the load generator's options for target T
cargo build --release --quiet -p trucd -p truc-loadgen
lg=target/release/truc-loadgen
nats="${NATS_SERVER:-nats-server}"
targets=(truc)
if command -v "$nats" >/dev/null; then
  targets+=(jetstream)
  # "nats-server: v2.10.27" -> 2 10
  read -r major minor < <("$nats" --version | sed -nE 's/.*v([0-9]+)\.([0-9]+).*/\1 \2/p') || true
  if [[ "${major:-}" =~ ^[0-9]+$ && "${minor:-}" =~ ^[0-9]+$ ]] \
    && (( major > 2 || (major == 2 && minor >= 10) )); then
    targets+=(jetstream-durable)
  fi
fi

target_opts() {
  case "$1" in
    truc) opts=(--target truc) ;;
    jetstream) opts=(--target jetstream --nats-server "$nats") ;;
    jetstream-durable) opts=(--target jetstream --nats-server "$nats" --nats-sync-always --nats-tls) ;;
  esac
}
