#!/usr/bin/env bash
# Runs the built binaries on CPU models other than this machine's, under qemu user-mode
# emulation (Debian's qemu-user): the tier tests of the packed base kernels and of the LoRA
# mixture (which name the tiers they check and skip) and `loramux generate` on a fixture model against its transformers
# reference. It shows that a binary built here does not depend on this machine's CPU: it runs
# on a CPU with AVX2 and no AVX-512 whatever built it, and picks its kernels at run time.
# qemu 7.2's emulator has AVX2 but no AVX-512, so the AVX-512 tiers are only exercised on a
# machine that has them. Needs `cargo build --workspace --all-targets` first.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-x86_64 >/dev/null || { echo "needs qemu-x86_64 (apt-get install qemu-user)" >&2; exit 2; }
tests=$(ls -t target/debug/deps/loramux_runtime-* | grep -v '\.d$' | head -1)
mixture=$(ls -t target/debug/deps/lora_mix-* | grep -v '\.d$' | head -1)
fixture=runtime/tests/fixtures/architectures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$fixture/qwen3_yarn/model.safetensors" "$fixture/qwen3_yarn/config.json" "$fixture/tokenizer.json" "$work/"
want=$(python3 -c "import json; m=json.load(open('$fixture/reference.json')); print([c for c in next(x for x in m['models'] if x['name']=='qwen3_yarn')['cases'] if c['name']=='base'][0]['greedy_ids'])")
prompt=$(python3 -c "import json; print(json.load(open('$fixture/reference.json'))['prompt'])")
for cpu in ${CPUS:-Haswell EPYC-Rome}; do
  echo "== qemu-x86_64 -cpu $cpu"
  # A filter that matched no test would pass with "0 passed": ask for at least one.
  for run in "$tests packed::tests::simd" "$mixture tiers::"; do
    set -- $run
    out=$(qemu-x86_64 -cpu "$cpu" "$1" --nocapture "$2" 2>&1 | grep -v "TCG doesn't support")
    grep -E "tier|test result" <<<"$out"
    grep -qE "test result: ok\. [1-9]" <<<"$out" || { echo "tier tests $2 failed under $cpu" >&2; exit 1; }
  done
  got=$(qemu-x86_64 -cpu "$cpu" ./target/debug/loramux generate --model "$work" --dtype f32 --raw --greedy \
    --ignore-eos --max-tokens 24 --json --prompt "$prompt" | python3 -c "import json,sys; print(json.load(sys.stdin)['output_ids'])")
  if [ "$got" = "$want" ]; then echo "generate on qwen3_yarn: matches transformers"; else echo "generate differs: $got vs $want"; exit 1; fi
done
