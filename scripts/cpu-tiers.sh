#!/usr/bin/env bash
# Runs the built binaries on CPU models other than this machine's, under qemu user-mode
# emulation (Debian's qemu-user): the packed-kernel tier test (which names the tiers it
# checks and skips) and `loramux generate` on a fixture model against its transformers
# reference. It shows that a binary built here does not depend on this machine's CPU: it runs
# on a CPU with AVX2 and no AVX-512 whatever built it, and picks its kernels at run time.
# qemu 7.2's emulator has AVX2 but no AVX-512, so the AVX-512 tiers are only exercised on a
# machine that has them. Needs `cargo build --workspace --all-targets` first.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-x86_64 >/dev/null || { echo "needs qemu-x86_64 (apt-get install qemu-user)" >&2; exit 2; }
tests=$(ls -t target/debug/deps/loramux_runtime-* | grep -v '\.d$' | head -1)
fixture=runtime/tests/fixtures/architectures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$fixture/qwen3_yarn/model.safetensors" "$fixture/qwen3_yarn/config.json" "$fixture/tokenizer.json" "$work/"
want=$(python3 -c "import json; m=json.load(open('$fixture/reference.json')); print([c for c in next(x for x in m['models'] if x['name']=='qwen3_yarn')['cases'] if c['name']=='base'][0]['greedy_ids'])")
prompt=$(python3 -c "import json; print(json.load(open('$fixture/reference.json'))['prompt'])")
for cpu in ${CPUS:-Haswell EPYC-Rome}; do
  echo "== qemu-x86_64 -cpu $cpu"
  qemu-x86_64 -cpu "$cpu" "$tests" --nocapture packed::tests::simd 2>&1 | grep -E "tier|test result"
  got=$(qemu-x86_64 -cpu "$cpu" ./target/debug/loramux generate --model "$work" --dtype f32 --raw --greedy \
    --ignore-eos --max-tokens 24 --json --prompt "$prompt" | python3 -c "import json,sys; print(json.load(sys.stdin)['output_ids'])")
  if [ "$got" = "$want" ]; then echo "generate on qwen3_yarn: matches transformers"; else echo "generate differs: $got vs $want"; exit 1; fi
done
