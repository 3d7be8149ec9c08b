#!/usr/bin/env python3
"""Generate reference fixtures for loramux's Rust tests from HF transformers + PEFT.

What it does
------------
1. Loads SmolLM2-135M-Instruct from the Q4_1 GGUF with `transformers` (which
   dequantizes every tensor to float32 and un-permutes q/k itself). This is our
   independent reference implementation of the base model.
2. Creates four random LoRA adapters with real `peft` (`LoraConfig` +
   `get_peft_model`, seeded random lora_A / lora_B, `save_pretrained`), then
   rewrites each `adapter_model.safetensors` in its storage dtype (f16 / bf16 /
   f32), keeping PEFT's tensor names, into
   `runtime/tests/fixtures/adapters/<name>/`.
3. Runs a set of cases (base model, single adapters, weighted mixtures; raw and
   chat prompts) and writes `runtime/tests/fixtures/reference.json` with the
   prompt token ids, the top-10 logits at the last prompt position and 16
   greedy (plain argmax, no EOS stop) token ids for every case, plus the list of
   cases that make up a mixed batch.

   * A single adapter at weight 1.0 is run with PEFT's own (unmerged) forward
     (`PeftModel.from_pretrained` on the saved folder, i.e. on the stored,
     rounded values).
   * Any other mixture is run by merging into a copy of the base weights in
     float64: W' = W + sum_i w_i * scale_i * B_i @ A_i (scale = alpha/r, or
     alpha/sqrt(r) with rslora; rank_pattern / alpha_pattern applied per
     module), cast back to float32, and run through the plain transformers
     model. The merge route is checked against PEFT's forward for every adapter
     (max abs logit difference printed, must be < 1e-3).
   * A batch's reference is each of its cases run alone.

It is run once by hand (not in CI); the outputs are committed. Re-run with:

    /root/.cache/loramux-venv/bin/python scripts/make_reference_fixtures.py

from the repository root (the venv needs torch, transformers, peft, gguf,
safetensors, numpy). It takes a few minutes on 2 CPU cores; on a busy machine prefix the
command with LORAMUX_TORCH_THREADS=1.

Note on `r16_rslora_regex`: PEFT refuses `layers_to_transform` together with a
regex (string) `target_modules` ("`layers_to_transform` cannot be used when
`target_modules` is a str."), so the layer restriction (layers 0-9) is encoded
in the regex itself.
"""

import copy
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch

T0 = time.time()
# 2 threads by default. If the machine is busy (e.g. a cargo build running), 2 OpenMP threads
# on 2 cores slow down ~10x; LORAMUX_TORCH_THREADS=1 avoids that
# (logits then differ only by float rounding, ~3e-5 observed; token ids are unaffected).
torch.set_num_threads(int(os.environ.get("LORAMUX_TORCH_THREADS", "2")))
torch.manual_seed(0)

import peft  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "runtime" / "tests" / "fixtures"
MODEL_DIR = Path("/root/.cache/loramux/models/smollm2-135m-instruct-q4_1")
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
N_GREEDY = 16
TOP_K = 10

# ---------------------------------------------------------------------------
# Adapters. A ~ N(0, 1/sqrt(d_in)), B ~ N(0, sigma); sigma chosen so that the
# adapter visibly changes top-10 / greedy output without producing garbage.
# ---------------------------------------------------------------------------
ADAPTERS = {
    "r8_qv": dict(
        config=dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
        dtype=torch.float16,
        seed=1001,
        sigma=0.05,
    ),
    "r2_all7": dict(
        config=dict(
            r=2,
            lora_alpha=4,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
        dtype=torch.bfloat16,
        seed=1002,
        sigma=0.03,
    ),
    "r16_rslora_regex": dict(
        config=dict(
            r=16,
            lora_alpha=8,
            use_rslora=True,
            # Layers 0-9 only; see module docstring (PEFT rejects
            # layers_to_transform with a string target_modules).
            target_modules=r".*\.layers\.[0-9]\.(self_attn|mlp)\.(o_proj|down_proj)",
        ),
        dtype=torch.float32,
        seed=1003,
        sigma=0.03,
    ),
    "r4_rank_pattern": dict(
        config=dict(
            r=4,
            lora_alpha=8,
            target_modules=["gate_proj", "up_proj", "k_proj"],
            rank_pattern={"gate_proj": 8},
            alpha_pattern={"gate_proj": 32},
        ),
        dtype=torch.float16,
        seed=1004,
        sigma=0.03,
    ),
}
DTYPE_NAMES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}

# ---------------------------------------------------------------------------
# Cases: (name, prompt, chat, [(adapter, weight), ...])
# ---------------------------------------------------------------------------
BASE_PROMPTS = [
    ("base_raw_0", "The capital of France is", False),
    ("base_raw_1", "In 2023, 17 + 25 =", False),
    (
        "base_raw_2",
        "Once upon a time, in a small village at the edge of a dark forest, there lived an old woman who",
        False,
    ),
    ("base_chat_0", "What are three good reasons to learn a second language?", True),
]
CASES = [(n, p, c, []) for (n, p, c) in BASE_PROMPTS] + [
    ("r8_qv_raw", "The quick brown fox jumps over the lazy dog. Then the dog", False, [("r8_qv", 1.0)]),
    ("r2_all7_raw", "Water boils at 100 degrees Celsius at sea level, but on a high mountain it", False,
     [("r2_all7", 1.0)]),
    ("r16_rslora_regex_raw", "My favorite recipe for a cold and rainy Sunday afternoon is a bowl of", False,
     [("r16_rslora_regex", 1.0)]),
    ("r4_rank_pattern_raw", "The three primary colors are red, blue and", False, [("r4_rank_pattern", 1.0)]),
    ("r2_all7_chat", "Write a short poem about the ocean.", True, [("r2_all7", 1.0)]),
    ("r8_qv_half", "Photosynthesis is the process by which green plants", False, [("r8_qv", 0.5)]),
    ("mix_r8_r2", "A good night's sleep is important because", False, [("r8_qv", 0.7), ("r2_all7", 0.5)]),
    ("mix_r2_r16_r4", "The history of the Roman Empire began when", False,
     [("r2_all7", 1.0), ("r16_rslora_regex", 0.6), ("r4_rank_pattern", 0.8)]),
]
BATCHES = [
    ("mixed_batch", ["base_raw_2", "r8_qv_raw", "r2_all7_raw", "mix_r8_r2", "r16_rslora_regex_raw"]),
]


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Model / tokenizer
# ---------------------------------------------------------------------------
log(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
tok = AutoTokenizer.from_pretrained(str(MODEL_DIR), gguf_file=MODEL_FILE)
try:
    base = AutoModelForCausalLM.from_pretrained(str(MODEL_DIR), gguf_file=MODEL_FILE, dtype=torch.float32)
except TypeError:  # older transformers
    base = AutoModelForCausalLM.from_pretrained(str(MODEL_DIR), gguf_file=MODEL_FILE, torch_dtype=torch.float32)
base.eval()
for p in base.parameters():
    p.requires_grad_(False)
cfg = base.config
assert cfg.num_hidden_layers == 30 and cfg.hidden_size == 576 and cfg.vocab_size == 49152, cfg
assert base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr(), "expected tied embeddings"
log("model loaded:", type(base).__name__, "eps", cfg.rms_norm_eps, "rope", getattr(cfg, "rope_parameters", None))

# float32 base weights of every linear layer that an adapter may touch (pristine copies)
BASE_W = {n: p.detach().clone() for n, p in base.named_parameters() if n.endswith("_proj.weight")}


def prompt_ids_for(prompt, chat):
    if not chat:
        return list(tok(prompt, add_special_tokens=False)["input_ids"]), None
    msgs = [{"role": "user", "content": prompt}]
    rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    ids = [int(i) for i in ids]
    return ids, rendered


@torch.no_grad()
def run_case(model, ids):
    """Returns (last-position logits of the prompt [vocab], top10 [(id, logit)], greedy ids [16])."""
    seq = list(ids)
    first = None
    for _ in range(N_GREEDY):
        logits = model(torch.tensor([seq], dtype=torch.long)).logits[0, -1].float()
        if first is None:
            first = logits.clone()
        seq.append(int(torch.argmax(logits)))
    vals, idx = torch.topk(first, TOP_K)
    top = [[int(i), float(v)] for i, v in zip(idx, vals)]
    return first, top, seq[len(ids):]


@torch.no_grad()
def full_logits(model, ids):
    return model(torch.tensor([ids], dtype=torch.long)).logits[0].double()


# ---------------------------------------------------------------------------
# Adapters: create with PEFT, store in their dtype
# ---------------------------------------------------------------------------
if FIX.exists():
    shutil.rmtree(FIX)
(FIX / "adapters").mkdir(parents=True)


def make_adapter(name, spec):
    out = FIX / "adapters" / name
    lcfg = LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, bias="none", **spec["config"])
    pm = get_peft_model(copy.deepcopy(base), lcfg)
    g = torch.Generator().manual_seed(spec["seed"])
    n_mod = 0
    with torch.no_grad():
        for mname, mod in pm.named_modules():
            if isinstance(mod, LoraLayer) and "default" in mod.lora_A:
                A = mod.lora_A["default"].weight  # [r, d_in]
                B = mod.lora_B["default"].weight  # [d_out, r]
                d_in = A.shape[1]
                A.copy_(torch.randn(A.shape, generator=g, dtype=torch.float64) / math.sqrt(d_in))
                B.copy_(torch.randn(B.shape, generator=g, dtype=torch.float64) * spec["sigma"])
                n_mod += 1
    pm.save_pretrained(str(out))
    del pm
    (out / "README.md").unlink(missing_ok=True)  # PEFT's boilerplate model card
    # rewrite safetensors in the storage dtype, same names
    st_path = out / "adapter_model.safetensors"
    tensors = load_file(str(st_path))
    tensors = {k: v.to(spec["dtype"]).contiguous() for k, v in sorted(tensors.items())}
    for k in tensors:
        assert re.fullmatch(
            r"base_model\.model\.model\.layers\.\d+\.(self_attn|mlp)\.[a-z]+_proj\.lora_[AB]\.weight", k
        ), k
    save_file(tensors, str(st_path), metadata={"format": "pt"})
    # make the recorded base model a hub id instead of a local cache path
    cpath = out / "adapter_config.json"
    c = json.loads(cpath.read_text())
    c["base_model_name_or_path"] = BASE_NAME
    if isinstance(c.get("target_modules"), list):  # PEFT stores a set: order varies run to run
        c["target_modules"] = sorted(c["target_modules"])
    cpath.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
    size = st_path.stat().st_size
    assert size < 2.5e6, f"{name}: adapter too large ({size} bytes)"
    log(f"adapter {name}: {n_mod} modules, {len(tensors)} tensors, {DTYPE_NAMES[spec['dtype']]}, {size} bytes")
    return out


ADAPTER_DIRS = {name: make_adapter(name, spec) for name, spec in ADAPTERS.items()}


def pattern_value(patterns, module_name, default):
    # same rule as peft.utils.other.get_pattern_key: first key k with re.match(rf"(.*\.)?({k})$", name)
    for k, v in (patterns or {}).items():
        if re.match(rf"(.*\.)?({k})$", module_name):
            return v
    return default


def load_adapter_deltas(name):
    """Reads the stored adapter back (stored dtype -> float64) and returns {param_name: scale * B @ A}."""
    d = ADAPTER_DIRS[name]
    c = json.loads((d / "adapter_config.json").read_text())
    t = load_file(str(d / "adapter_model.safetensors"))
    deltas = {}
    for k in t:
        if not k.endswith(".lora_A.weight"):
            continue
        stem = k[: -len(".lora_A.weight")]
        module = stem[len("base_model.model."):]  # e.g. model.layers.3.self_attn.q_proj
        A = t[k].double()
        B = t[stem + ".lora_B.weight"].double()
        r = pattern_value(c.get("rank_pattern"), module, c["r"])
        alpha = pattern_value(c.get("alpha_pattern"), module, c["lora_alpha"])
        assert A.shape[0] == r and B.shape[1] == r, (k, A.shape, B.shape, r)
        scale = alpha / math.sqrt(r) if c.get("use_rslora") else alpha / r
        deltas[module + ".weight"] = scale * (B @ A)
    return deltas


DELTAS = {name: load_adapter_deltas(name) for name in ADAPTERS}

# One reusable float32 model for merged weights.
work = copy.deepcopy(base)
work_params = dict(work.named_parameters())
_dirty = set()


def merged_model(mix):
    global _dirty
    with torch.no_grad():
        for n in _dirty:
            work_params[n].copy_(BASE_W[n])
        _dirty = set()
        acc = {}
        for name, w in mix:
            for n, dw in DELTAS[name].items():
                acc[n] = acc.get(n, 0.0) + w * dw
        for n, dw in acc.items():
            work_params[n].copy_((BASE_W[n].double() + dw).float())
            _dirty.add(n)
    return work


def peft_model(name):
    pm = PeftModel.from_pretrained(copy.deepcopy(base), str(ADAPTER_DIRS[name]))
    pm.eval()
    # verify PEFT holds exactly the stored (rounded) values
    stored = load_file(str(ADAPTER_DIRS[name] / "adapter_model.safetensors"))
    n = 0
    for mname, mod in pm.named_modules():
        if isinstance(mod, LoraLayer) and "default" in mod.lora_A:
            key = mname + ".lora_A.weight"
            assert torch.equal(mod.lora_A["default"].weight.double(), stored[key].double()), key
            key = mname + ".lora_B.weight"
            assert torch.equal(mod.lora_B["default"].weight.double(), stored[key].double()), key
            n += 1
    assert 2 * n == len(stored), (n, len(stored))
    return pm


# ---------------------------------------------------------------------------
# Base results per prompt, for "changed from base" diagnostics
# ---------------------------------------------------------------------------
_base_cache = {}


def base_result(ids):
    key = tuple(ids)
    if key not in _base_cache:
        _base_cache[key] = run_case(base, ids)
    return _base_cache[key]


def dec(ids):
    return tok.decode(ids)


# ---------------------------------------------------------------------------
# Effect check: every adapter alone (merge route) on the four base prompts
# ---------------------------------------------------------------------------
log("=== effect of each adapter (weight 1.0) on the base prompts ===")
effect_summary = {}
for aname in ADAPTERS:
    m = merged_model([(aname, 1.0)])
    ch_top = ch_greedy = 0
    for (cname, prompt, chat) in BASE_PROMPTS:
        ids, _ = prompt_ids_for(prompt, chat)
        _, btop, bgreedy = base_result(ids)
        _, top, greedy = run_case(m, ids)
        dt = [i for i, _ in top] != [i for i, _ in btop]
        dg = greedy != bgreedy
        ch_top += dt
        ch_greedy += dg
        log(f"  {aname:18s} {cname:12s} top10 {'CHANGED' if dt else 'same   '} greedy {'CHANGED' if dg else 'same   '}"
            f" | {dec(greedy)!r}")
    effect_summary[aname] = (ch_top, ch_greedy, len(BASE_PROMPTS))
for aname, (a, b, n) in effect_summary.items():
    log(f"  summary {aname}: top-10 order changed {a}/{n}, greedy changed {b}/{n} (sigma={ADAPTERS[aname]['sigma']})")

# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------
log("=== cases ===")
out_cases = []
agreement = {}
for (cname, prompt, chat, mix) in CASES:
    ids, rendered = prompt_ids_for(prompt, chat)
    assert 5 <= len(ids) or chat, (cname, len(ids))
    if not chat:
        assert len(ids) <= 30, (cname, len(ids))
    if not mix:
        route = "base"
        _, top, greedy = base_result(ids)
    elif len(mix) == 1 and mix[0][1] == 1.0:
        route = "peft"
        aname = mix[0][0]
        pm = peft_model(aname)
        _, top, greedy = run_case(pm, ids)
        # cross-check the merge route against PEFT's forward on this adapter
        mm = merged_model(mix)
        diff = (full_logits(pm, ids + greedy) - full_logits(mm, ids + greedy)).abs().max().item()
        _, mtop, mgreedy = run_case(mm, ids)
        agreement[cname] = (diff, mgreedy == greedy, [i for i, _ in mtop] == [i for i, _ in top])
        log(f"  merge-vs-PEFT {aname} on {cname}: max|dlogit| = {diff:.3e} over {len(ids) + len(greedy)}"
            f" positions, greedy equal {mgreedy == greedy}, top10 ids equal {agreement[cname][2]}")
        assert diff < 1e-3, f"merge route disagrees with PEFT for {aname}: {diff}"
        del pm
    else:
        route = "merged"
        _, top, greedy = run_case(merged_model(mix), ids)
    _, btop, bgreedy = base_result(ids)
    changed = ("top10 " + ("CHANGED" if [i for i, _ in top] != [i for i, _ in btop] else "same") +
               ", greedy " + ("CHANGED" if greedy != bgreedy else "same")) if mix else "(base)"
    log(f"  {cname:22s} [{route:6s}] n_prompt={len(ids):2d} {changed}")
    log(f"      prompt {prompt!r} -> {dec(greedy)!r}")
    if rendered is not None:
        log(f"      rendered chat: {rendered!r}")
    case = {
        "name": cname,
        "prompt": prompt,
        "chat": chat,
        "prompt_ids": ids,
    }
    if rendered is not None:
        case["rendered"] = rendered
    case["adapters"] = [{"path": f"adapters/{a}", "weight": w} for a, w in mix]
    case["top_logits"] = top
    case["greedy_ids"] = greedy
    out_cases.append(case)

# ---------------------------------------------------------------------------
# Batches and output
# ---------------------------------------------------------------------------
by_name = {c["name"]: c for c in out_cases}
out_batches = []
for bname, names in BATCHES:
    for n in names:
        assert n in by_name, (bname, n)
    lens = [len(by_name[n]["prompt_ids"]) for n in names]
    assert len(set(lens)) == len(lens), f"batch {bname}: prompt lengths not distinct: {lens}"
    log(f"batch {bname}: {list(zip(names, lens))}")
    out_batches.append({"name": bname, "cases": names})

ref = {
    "model_sha256": sha256(MODEL_DIR / MODEL_FILE),
    "generated_by": "scripts/make_reference_fixtures.py",
    "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    "cases": out_cases,
    "batches": out_batches,
}
text = json.dumps(ref, indent=1)
# put every innermost all-number array (prompt_ids, greedy_ids, [id, logit] pairs) on one line
text = re.sub(r"\[[\s\d.,eE+\-]*\]", lambda m: re.sub(r"\s+", "", m.group(0)).replace(",", ", "), text)
assert json.loads(text) == ref
(FIX / "reference.json").write_text(text + "\n")

# ---------------------------------------------------------------------------
# Self-checks on what was written
# ---------------------------------------------------------------------------
chk = json.loads((FIX / "reference.json").read_text())
names = set()
for c in chk["cases"]:
    assert c["name"] not in names
    names.add(c["name"])
    assert len(c["top_logits"]) == TOP_K and len(c["greedy_ids"]) == N_GREEDY, c["name"]
    vals = [v for _, v in c["top_logits"]]
    assert vals == sorted(vals, reverse=True), c["name"]
    assert all(isinstance(i, int) and 0 <= i < cfg.vocab_size for i in c["greedy_ids"] + c["prompt_ids"])
    for a in c["adapters"]:
        assert (FIX / a["path"] / "adapter_model.safetensors").exists()
for b in chk["batches"]:
    assert all(n in names for n in b["cases"])
total = sum(f.stat().st_size for f in FIX.rglob("*") if f.is_file())
assert total < 10e6, total
log("=== files ===")
for f in sorted(FIX.rglob("*")):
    if f.is_file():
        log(f"  {f.relative_to(REPO)}  {f.stat().st_size} bytes")
log(f"total fixtures size: {total} bytes; {len(chk['cases'])} cases, {len(chk['batches'])} batches")
log("merge-vs-PEFT agreement:", {k: f"{v[0]:.3e}" for k, v in agreement.items()})
log(f"wall time: {time.time() - T0:.1f}s")
