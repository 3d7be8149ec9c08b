#!/usr/bin/env bash
# The main job on a fresh machine: build, fetch the default models, and chat with the
# default model (SmolLM2-135M-Instruct, Q4_1 GGUF). Extra arguments go to `loramux generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bin loramux
./target/debug/loramux models fetch
if [ $# -eq 0 ]; then
  set -- --prompt "Give me three tips for learning a new language." --max-tokens 96
fi
./target/debug/loramux generate "$@"
