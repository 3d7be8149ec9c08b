#!/usr/bin/env bash
# Load test on loopback: starts `loramux serve` with a fresh registry, registers 16 adapters
# (the four PEFT fixtures under four ids each: distinct adapters to the bank), then runs
# tests/load_test.py (64 streaming clients, 60 s per phase by default; pass --seconds N).
set -euo pipefail
cd "$(dirname "$0")/.."
home=${LORAMUX_HOME:-$HOME/.cache/loramux}
venv=$home/e2e-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check openai httpx
cargo build -q --bin loramux
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fixtures=$PWD/runtime/tests/fixtures/adapters
./target/debug/loramux serve --port "$port" --registry "$work/registry" --allow-root "$fixtures" \
  --bank-slots 16 --max-running 64 --queue 256 >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.5
done
ids=()
topics=("cooking recipes" "tax law" "poetry writing" "bicycle repair" "computer science" "literature summaries" "gardening" "travel planning"
        "personal finance" "music theory" "chemistry homework" "fitness training" "legal contracts" "history questions" "astronomy" "pet care")
i=0
for sub in r8_qv r2_all7 r16_rslora_regex r4_rank_pattern; do
  for k in 0 1 2 3; do
    id="a$i"; topic=${topics[$i]}
    curl -sf "http://127.0.0.1:$port/v1/adapters" -H 'content-type: application/json' \
      -d "{\"id\":\"$id\",\"path\":\"$fixtures/$sub\",\"description\":\"Help with $topic\",\"examples\":[\"A question about $topic\"]}" >/dev/null
    ids+=("$id"); i=$((i+1))
  done
done
"$venv/bin/python" tests/load_test.py "http://127.0.0.1:$port" --adapters "$(IFS=,; echo "${ids[*]}")" "$@"
curl -s "http://127.0.0.1:$port/metrics" | grep -E "^loramux_(adapter_cache|sequences|requests_total)" || true
