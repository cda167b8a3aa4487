# Sourced by the bench_* scripts after they set `root` and read their
# arguments: sets up, builds the release binaries, and gives bin, lt, out,
# tmp, pids (killed on exit), cleanup and free_port.
scripts/setup.sh >/dev/null
cargo build --release --locked -q -p switchboard -p loadtest
bin=$root/target/release/switchboard
lt=$root/target/release/sb-loadtest
out=$root/target/bench
mkdir -p "$out"
tmp=$(mktemp -d /tmp/sbbench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
