#!/usr/bin/env bash
# Starts the real `loramux serve` on a loopback port with a fresh registry and runs
# tests/openai_client.py against it with the official openai client (installed with pip into
# a venv under $LORAMUX_HOME). The server is stopped on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
home=${LORAMUX_HOME:-$HOME/.cache/loramux}
venv=$home/e2e-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check openai
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fixtures=$PWD/runtime/tests/fixtures/adapters
./target/debug/loramux serve --port "$port" --registry "$work/registry" --allow-root "$fixtures" \
  --admin-token e2e-token >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.5
done
LORAMUX_URL="http://127.0.0.1:$port" LORAMUX_FIXTURES="$fixtures" LORAMUX_ADMIN_TOKEN=e2e-token \
  "$venv/bin/python" tests/openai_client.py
