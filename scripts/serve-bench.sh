#!/usr/bin/env bash
# Serving benchmark on loopback, bounded in time (about 4*SECONDS + SOAK_SECONDS + start-up):
# writes random rank-8 PEFT adapters on all seven projections (cached under
# $LORAMUX_HOME/bench-adapters), starts `loramux serve --adapters-dir` with 16 bank slots,
# then runs tests/serve_bench.py: 32 clients over 4 adapters vs over 256 in one run, and a
# soak over SOAK_ADAPTERS adapters that samples the server's RSS (rss.csv, rss.png in OUT).
#
# Usage: scripts/serve-bench.sh [--seconds 60] [--rounds 2] [--soak-adapters 2000] [--soak-seconds 120]
#                               [--host-cache 1G] [--out DIR]
# --seconds 0 skips the comparison, --soak-adapters 0 the soak. The comparison runs with a 3G host cache (all 256 adapters fit, as in S-LoRA); the soak
# with --host-cache, so most of its adapters are read again from disk.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=2 seconds=60 soak_adapters=2000 soak_seconds=120 host_cache=1G out=target/serve-bench
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --soak-adapters) soak_adapters=$2; shift 2 ;;
    --soak-seconds) soak_seconds=$2; shift 2 ;;
    --host-cache) host_cache=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
home=${LORAMUX_HOME:-$HOME/.cache/loramux}
venv=$home/e2e-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check openai httpx numpy safetensors tqdm matplotlib
cargo build -q --bin loramux
adapters=$home/bench-adapters
count=$(( soak_adapters > 256 ? soak_adapters : 256 ))
"$venv/bin/python" scripts/random_peft_adapters.py "$adapters" --count "$count"
mkdir -p "$out"
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null || true' EXIT
# Starts a server over the adapters with this host-cache budget; sets $port and $server.
start_server() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  ./target/debug/loramux serve --port "$port" --adapters-dir "$adapters" --bank-slots 16 --bank-rank 8 \
    --host-cache-bytes "$1" --max-running 32 >"$out/server-$1.log" 2>&1 &
  server=$!
  for _ in $(seq 1 240); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return
    kill -0 $server 2>/dev/null || { cat "$out/server-$1.log"; exit 1; }
    sleep 0.5
  done
}
stop_server() {
  curl -s "http://127.0.0.1:$port/metrics" | grep -E "^loramux_(adapter_cache|sequences)" || true
  kill $server; wait $server 2>/dev/null || true; server=
}
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) threads"
# S-LoRA's setting: every adapter fits in host memory (256 x 9.8 MB in f32), bank slots do not.
if [ "$seconds" -gt 0 ]; then
  start_server 3G
  (cd tests && "$venv/bin/python" serve_bench.py "http://127.0.0.1:$port" --clients 32 \
    --seconds "$seconds" --rounds "$rounds" --compare 4,256)
  stop_server
fi
if [ "$soak_adapters" -gt 0 ]; then
  start_server "$host_cache"
  model_rss=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$server/status)
  # The bound: the model as loaded, the host budget, the bank's stacks (16 slots of rank 8,
  # f32, all seven projections of 30 layers, and each slot's f16 small-group copy), and what
  # is in flight outside the cache: one adapter (f32 weights and their f16 copy) per client,
  # plus 256 MiB for the clients' KV caches and buffers.
  budget_mb=$(python3 -c "
s='$host_cache'; m={'K':1/1024,'M':1,'G':1024}
print(int(float(s[:-1])*m[s[-1]]) if s[-1] in m else int(s)//(1<<20))")
  adapter_bytes=$(( 8 * 10176 * 30 * 4 ))
  bank_mb=$(( 16 * adapter_bytes * 3 / 2 / 1048576 ))
  inflight_mb=$(( 32 * adapter_bytes * 3 / 2 / 1048576 + 256 ))
  limit=$(( model_rss + budget_mb + bank_mb + inflight_mb ))
  echo "RSS bound: model ${model_rss} + host cache ${budget_mb} + bank ${bank_mb} + in flight ${inflight_mb} = ${limit} MiB"
  (cd tests && "$venv/bin/python" serve_bench.py "http://127.0.0.1:$port" --clients 32 --soak "$soak_adapters" \
    --soak-seconds "$soak_seconds" --pid "$server" --rss-limit-mb "$limit" --out "../$out")
  stop_server
fi
