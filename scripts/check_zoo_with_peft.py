#!/usr/bin/env python3
"""Checks that Hugging Face PEFT loads the adapters `loramux train` wrote (the zoo) and that
they behave the same there as in loramux.

For each zoo adapter: `PeftModel.from_pretrained` on the committed folder over
SmolLM2-135M-Instruct loaded by transformers from the same Q4_1 GGUF (dequantized to f32),
then greedy answers to a few held-out test prompts of the adapter's task, rendered with the
model's chat template. The same prompts go through `loramux generate --dtype f32 --greedy`;
the script prints both answers and whether they agree, and exits non-zero if PEFT fails to
load an adapter or if fewer than 90% of the answers agree (float32 on both sides, but two
implementations: an argmax tie can differ).

Run once by hand from the repository root (not in CI; needs torch, transformers, peft, gguf):

    cargo build && /root/.cache/loramux-venv/bin/python scripts/check_zoo_with_peft.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "evaluation" / "zoo"
LORAMUX = ROOT / "target" / "debug" / "loramux"
HOME = Path(os.environ.get("LORAMUX_HOME", Path.home() / ".cache" / "loramux"))
MODEL_DIR = HOME / "models" / "smollm2-135m-instruct-q4_1"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS_PER_TASK = 3
MAX_NEW = 24

torch.set_num_threads(int(os.environ.get("LORAMUX_TORCH_THREADS", "2")))


def test_prompts(task):
    out = subprocess.run([str(LORAMUX), "tasks", "show", task, "-n", str(PROMPTS_PER_TASK), "--seed", "99"],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def loramux_answers(rows):
    batch = "\n".join(json.dumps({"prompt": p, "adapters": [{"path": str(a), "weight": 1.0}]}) for p, a in rows)
    path = Path("/tmp/loramux-peft-check.jsonl")
    path.write_text(batch)
    out = subprocess.run([str(LORAMUX), "generate", "--dtype", "f32", "--greedy", "--max-tokens", str(MAX_NEW),
                          "--batch", str(path), "--json"], check=True, capture_output=True, text=True).stdout
    return [json.loads(line)["text"].strip() for line in out.splitlines()]


def main():
    manifest = json.loads((ZOO / "zoo.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(MODEL_DIR), gguf_file=MODEL_FILE)
    base = AutoModelForCausalLM.from_pretrained(str(MODEL_DIR), gguf_file=MODEL_FILE, dtype=torch.float32)
    base.eval()
    rows, peft_out, expected = [], [], []
    model = None
    for entry in manifest["adapters"]:
        folder = ZOO / entry["dir"]
        if model is None:
            model = PeftModel.from_pretrained(base, str(folder), adapter_name=entry["id"])
        else:
            model.load_adapter(str(folder), adapter_name=entry["id"])
        model.set_adapter(entry["id"])
        print(f"PEFT loaded {entry['id']} (r={model.peft_config[entry['id']].r}, "
              f"targets={sorted(model.peft_config[entry['id']].target_modules)})")
        for ex in test_prompts(entry["id"]):
            text = tok.apply_chat_template([{"role": "user", "content": ex["prompt"]}], tokenize=False,
                                           add_generation_prompt=True)
            ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
            with torch.no_grad():
                gen = model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False,
                                     eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
            peft_out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip())
            rows.append((ex["prompt"], folder))
            expected.append(ex["answer"])
    ours = loramux_answers(rows)
    agree = 0
    for (prompt, folder), p, o, e in zip(rows, peft_out, ours, expected):
        same = p == o
        agree += same
        print(f"{'same' if same else 'DIFF'} {folder.name:16} peft={p!r} loramux={o!r} expected={e!r}")
    share = agree / len(rows)
    print(f"{agree}/{len(rows)} answers agree between PEFT and loramux ({share:.0%})")
    sys.exit(0 if share >= 0.9 else 1)


if __name__ == "__main__":
    main()
