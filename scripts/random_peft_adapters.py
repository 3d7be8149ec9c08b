"""Writes N random rank-r PEFT LoRA adapters (all seven projections of every layer) for the
default model's shapes, one folder each (`a0`, `a1`, ...), as PEFT's save_pretrained lays
them out. A ~ N(0, 1/d_in) like PEFT's Kaiming init, B ~ N(0, 0.01^2) as after a short
training run, so answers stay sensible. Values are stored in f16; every adapter has its own
seed, so every file (and its sha256) differs.

Usage: python scripts/random_peft_adapters.py OUT --count 256 [--rank 8] [--seed 0]
"""

import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file
from tqdm import tqdm

# SmolLM2-135M-Instruct: hidden 576, intermediate 1536, 9 query heads and 3 kv heads of 64.
LAYERS, HIDDEN, INTERMEDIATE, KV = 30, 576, 1536, 192
SHAPES = {  # module: (parent, d_in, d_out)
    "q_proj": ("self_attn", HIDDEN, HIDDEN),
    "k_proj": ("self_attn", HIDDEN, KV),
    "v_proj": ("self_attn", HIDDEN, KV),
    "o_proj": ("self_attn", HIDDEN, HIDDEN),
    "gate_proj": ("mlp", HIDDEN, INTERMEDIATE),
    "up_proj": ("mlp", HIDDEN, INTERMEDIATE),
    "down_proj": ("mlp", INTERMEDIATE, HIDDEN),
}


def write(dir, rank, seed):
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(LAYERS):
        for module, (parent, d_in, d_out) in SHAPES.items():
            prefix = f"base_model.model.model.layers.{layer}.{parent}.{module}"
            a = rng.standard_normal((rank, d_in), dtype=np.float32) / np.sqrt(d_in)
            b = rng.standard_normal((d_out, rank), dtype=np.float32) * 0.01
            tensors[f"{prefix}.lora_A.weight"] = a.astype(np.float16)
            tensors[f"{prefix}.lora_B.weight"] = b.astype(np.float16)
    os.makedirs(dir, exist_ok=True)
    save_file(tensors, os.path.join(dir, "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
              "lora_dropout": 0.0, "target_modules": list(SHAPES), "bias": "none",
              "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    with open(os.path.join(dir, "adapter_config.json"), "w") as f:
        json.dump(config, f)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    for i in tqdm(range(a.count), desc="random adapters", unit="adapter", mininterval=2):
        dir = os.path.join(a.out, f"a{i}")
        if not os.path.exists(os.path.join(dir, "adapter_config.json")):
            write(dir, a.rank, a.seed + i)


if __name__ == "__main__":
    main()
