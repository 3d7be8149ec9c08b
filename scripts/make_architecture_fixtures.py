#!/usr/bin/env python3
"""Reference fixtures for every architecture and config style loramux loads from safetensors.

The companion of `make_reference_fixtures.py` (which covers the default GGUF model): for each
case in ARCHS it

1. builds a tiny random model with transformers 5 (`AutoModelForCausalLM.from_config`), with
   weights large enough that attention, the rotary scaling and the adapters change the greedy
   text, and saves it with `save_pretrained` (float16 safetensors, the transformers 5
   `config.json` layout with `rope_parameters`);
2. writes the same config as transformers 4.x writes it (`config.v4.json`: top-level
   `rope_theta` / `rope_scaling`), saved by a real transformers 4 when one is importable
   (`--transformers4 DIR`, a `pip install --target` folder), and checks transformers 5 reads
   both to the same logits;
3. makes two random PEFT adapters (`LoraConfig` + `get_peft_model`, seeded A/B, saved by
   PEFT) and records, for the base model, each adapter alone (PEFT's unmerged forward) and a
   weighted mixture of both (merged into the weights in float64), the prompt ids, the top-10
   logits at the last prompt position and a 24-token greedy continuation;
4. checks that the feature each case exists for matters: the same model with the feature
   turned off (rotary scaling removed, theta at the default, biases zeroed, q/k norm
   dropped) must move the logits by more than FEATURE_MIN, so a loader that ignored it
   could not pass the Rust tests.

5. with `--llama-convert DIR` (llama.cpp's `convert_hf_to_gguf.py` with its `conversion/` and
   `gguf-py/`, e.g. from the llama-cpp-python sdist's `vendor/llama.cpp`), converts each model
   to `model.gguf` (f16) with llama.cpp's own converter, so the GGUF path (q/k row permutation,
   `rope_freqs.weight`, metadata) is checked against the same references. The converter does
   not know this fixture tokenizer's pre-tokenizer hash; it is told "gpt-2" (the byte-level
   regex the tokenizer uses). `--convert-only` converts the committed fixtures without
   remaking them.

Prompts are tokenized by a small byte-level BPE trained here (`tokenizer.json`, shared by
every case); prompts are long enough (~70 tokens + 24 generated) to pass the scaled
rotary's original context (64 positions), where the scaling types differ from plain RoPE.

Run once by hand from the repository root; the outputs are committed:

    python3 -m venv ~/.cache/loramux/fixture-venv
    ~/.cache/loramux/fixture-venv/bin/pip install 'transformers>=5' peft torch safetensors tokenizers
    ~/.cache/loramux/fixture-venv/bin/pip install --target ~/.cache/loramux/tf4 \
        'transformers==4.57.*' 'huggingface_hub<1' 'tokenizers<0.23'
    ~/.cache/loramux/fixture-venv/bin/pip install sentencepiece   # the converter imports it
    ~/.cache/loramux/fixture-venv/bin/python scripts/make_architecture_fixtures.py \
        --transformers4 ~/.cache/loramux/tf4 --llama-convert ~/.cache/loramux/llama-convert
"""

import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(int(os.environ.get("LORAMUX_TORCH_THREADS", "2")))

import peft  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "runtime" / "tests" / "fixtures" / "architectures"
T0 = time.time()
N_GREEDY = 24
TOP_K = 10
VOCAB = 384
# A feature turned off must move some logit by more than this (the Rust tolerance is 1e-3).
FEATURE_MIN = 0.05
# Every top-10 boundary and greedy choice must be won by more than this, so float rounding
# between two correct implementations cannot flip a token.
MARGIN_MIN = 2e-3

SHAPE = dict(
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=VOCAB,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)
# The original context of the scaled rotary cases: prompts run past it.
ORIGINAL_CONTEXT = 64

# name -> (model_type, config overrides, rope parameters (transformers 5 layout), feature)
# `feature` names what the case proves and how to turn it off for the FEATURE_MIN check.
ARCHS = {
    "llama3_theta500k": ("llama", dict(), dict(rope_type="default", rope_theta=500000.0), "theta"),
    "llama31_rope_llama3": (
        "llama",
        dict(),
        dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
             high_freq_factor=4.0, original_max_position_embeddings=ORIGINAL_CONTEXT),
        "scaling",
    ),
    "llama32_tied_llama3": (
        "llama",
        dict(tie_word_embeddings=True),
        dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
             high_freq_factor=4.0, original_max_position_embeddings=ORIGINAL_CONTEXT),
        "scaling",
    ),
    "llama_linear": ("llama", dict(), dict(rope_type="linear", rope_theta=10000.0, factor=4.0), "scaling"),
    "llama_dynamic": ("llama", dict(), dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0), "none"),
    "llama_attention_mlp_bias": (
        "llama", dict(attention_bias=True, mlp_bias=True), dict(rope_type="default", rope_theta=10000.0), "bias",
    ),
    "mistral_head_dim": (
        "mistral", dict(head_dim=32, sliding_window=None), dict(rope_type="default", rope_theta=1000000.0), "theta",
    ),
    "qwen2": ("qwen2", dict(), dict(rope_type="default", rope_theta=1000000.0), "bias"),
    "qwen25_yarn": (
        "qwen2",
        dict(),
        dict(rope_type="yarn", rope_theta=1000000.0, factor=4.0, original_max_position_embeddings=ORIGINAL_CONTEXT),
        "scaling",
    ),
    "qwen3": ("qwen3", dict(head_dim=32), dict(rope_type="default", rope_theta=1000000.0), "qk_norm"),
    "qwen3_yarn": (
        "qwen3",
        dict(head_dim=32),
        dict(rope_type="yarn", rope_theta=1000000.0, factor=4.0, original_max_position_embeddings=ORIGINAL_CONTEXT),
        "scaling",
    ),
}

ADAPTERS = {
    "attn_r8": dict(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], sigma=0.5),
    "mlp_r4_rslora": dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["gate_proj", "up_proj", "down_proj", "q_proj"], sigma=0.5),
}
MIXTURE = [("attn_r8", 0.6), ("mlp_r4_rslora", 0.4)]

PROMPT = (
    "Rotary position embeddings rotate each pair of query and key features by an angle that grows "
    "with the position, so attention can tell near tokens from far ones. Long contexts need the "
    "angles scaled, and every model family scales them its own way."
)


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


def train_tokenizer(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [PROMPT] + [
        json.loads(line)["prompt"]
        for line in (REPO / "evaluation" / "data" / "general_prompts.jsonl").read_text().splitlines()
        if line.strip()
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    tok.save(str(path))
    return PreTrainedTokenizerFast(tokenizer_file=str(path))


def config_for(model_type, overrides, rope):
    return AutoConfig.for_model(model_type, **SHAPE, **overrides, rope_parameters=dict(rope))


def randomize(model, seed):
    """Weights of unit scale: N(0, 1/d_in) matrices, norm gains around 1, visible biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * (torch.rand(p.shape, generator=g) * 2 - 1))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.35 * torch.randn(p.shape, generator=g))
            elif p.dim() == 2:
                scale = 2.5 if name.startswith("lm_head") else 1.0
                p.copy_(scale * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:
                raise AssertionError(f"unexpected parameter {name}")


def load_f32(path):
    m = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    m.eval()
    return m


@torch.no_grad()
def run(model, ids):
    """Last-prompt-position logits, top-10 [(id, logit)], greedy ids, smallest winning margin."""
    seq = list(ids)
    first = None
    margin = float("inf")
    for step in range(N_GREEDY):
        logits = model(torch.tensor([seq])).logits[0, -1].float()
        if first is None:
            first = logits.clone()
        top2 = torch.topk(logits, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        seq.append(int(torch.argmax(logits)))
    vals, idx = torch.topk(first, TOP_K + 1)
    margin = min(margin, float((vals[:-1] - vals[1:]).min()))
    top = [[int(i), float(v)] for i, v in zip(idx[:TOP_K], vals[:TOP_K])]
    return first, top, seq[len(ids):], margin


@torch.no_grad()
def all_logits(model, ids):
    return model(torch.tensor([ids])).logits[0].double()


def make_adapter(base, name, spec, seed, out):
    spec = dict(spec)
    sigma = spec.pop("sigma")
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, bias="none", **spec))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, mod in pm.named_modules():
            if isinstance(mod, LoraLayer) and "default" in mod.lora_A:
                a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
                a.copy_(torch.randn(a.shape, generator=g) / math.sqrt(a.shape[1]))
                b.copy_(sigma * torch.randn(b.shape, generator=g) / math.sqrt(b.shape[1]))
    pm.save_pretrained(str(out))
    (out / "README.md").unlink(missing_ok=True)
    cpath = out / "adapter_config.json"
    c = json.loads(cpath.read_text())
    c["base_model_name_or_path"] = "loramux/fixture"
    c["target_modules"] = sorted(c["target_modules"])
    cpath.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")


def merged(base, adapter_dirs, mixture):
    """A copy of `base` with `W + Σ w · scale · B A` merged in float64."""
    m = copy.deepcopy(base)
    params = dict(m.named_parameters())
    for name, w in mixture:
        d = adapter_dirs[name]
        c = json.loads((d / "adapter_config.json").read_text())
        t = load_file(str(d / "adapter_model.safetensors"))
        scale = c["lora_alpha"] / (math.sqrt(c["r"]) if c.get("use_rslora") else c["r"])
        for k, a in t.items():
            if not k.endswith(".lora_A.weight"):
                continue
            stem = k[: -len(".lora_A.weight")]
            b = t[stem + ".lora_B.weight"]
            target = params[stem[len("base_model.model."):] + ".weight"]
            delta = w * scale * (b.double() @ a.double())
            with torch.no_grad():
                target.copy_((target.double() + delta).float())
    return m


def feature_off(name, model_type, overrides, rope, feature, model_dir):
    """The case's model with its feature turned off, or None for cases that prove no feature."""
    if feature == "none":
        return None
    m = load_f32(model_dir)
    if feature in ("scaling", "theta"):
        plain = dict(rope_type="default", rope_theta=rope["rope_theta"] if feature == "scaling" else 10000.0)
        cfg = config_for(model_type, overrides, plain)
        off = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        off.load_state_dict(m.state_dict())
        return off.eval()
    with torch.no_grad():
        for layer in m.model.layers:
            if feature == "bias":
                for mod in m.modules():
                    if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                        mod.bias.zero_()
            elif feature == "qk_norm":
                layer.self_attn.q_norm = torch.nn.Identity()
                layer.self_attn.k_norm = torch.nn.Identity()
            else:
                raise AssertionError(feature)
    return m


def v4_config(tf4, model_type, overrides, rope, dest):
    """config.json as transformers 4 writes it, by transformers 4 itself."""
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    scaling = None if scaling.get("rope_type") == "default" else scaling
    kwargs = dict(SHAPE, **overrides, rope_theta=rope["rope_theta"], rope_scaling=scaling)
    code = (
        "import json, sys, transformers\n"
        "from transformers import AutoConfig\n"
        "a = json.loads(sys.argv[1])\n"
        "c = AutoConfig.for_model(a['model_type'], **a['kwargs'])\n"
        "c.architectures = [a['arch']]\n"
        "c.torch_dtype = 'float16'\n"
        "print(c.to_json_string(use_diff=True))\n"
        "assert transformers.__version__.startswith('4.'), transformers.__version__\n"
    )
    arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "qwen3": "Qwen3ForCausalLM"}[model_type]
    args = json.dumps(dict(model_type=model_type, kwargs=kwargs, arch=arch))
    env = dict(os.environ, PYTHONPATH=str(tf4), TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    text = subprocess.run([sys.executable, "-c", code, args], env=env, check=True, capture_output=True, text=True).stdout
    dest.write_text(text)



def make_model(args, name, model_type, overrides, rope, feature, seed, prompt_ids):
    """Builds, saves and records one case; None when the draw proves too little (a token won by
    a hair, or an adapter case that leaves the greedy text as the base model writes it)."""
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    cfg = config_for(model_type, overrides, rope)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    randomize(model, seed)
    model.to(torch.float16).save_pretrained(str(d))
    (d / "generation_config.json").unlink(missing_ok=True)
    base = load_f32(d)

    adapter_dirs = {}
    for i, (aname, spec) in enumerate(ADAPTERS.items()):
        adapter_dirs[aname] = d / aname
        make_adapter(base, aname, spec, 1000 * seed + i, d / aname)

    cases = []
    base_run = run(base, prompt_ids)
    cases.append(("base", [], base_run))
    for aname in ADAPTERS:
        pm = PeftModel.from_pretrained(copy.deepcopy(base), str(adapter_dirs[aname])).eval()
        r = run(pm, prompt_ids)
        via_merge = all_logits(merged(base, adapter_dirs, [(aname, 1.0)]), prompt_ids)
        merge_err = float((via_merge - all_logits(pm, prompt_ids)).abs().max())
        assert merge_err < 1e-3, f"{name}/{aname}: merge differs from PEFT's forward by {merge_err}"
        cases.append((aname, [(aname, 1.0)], r))
    cases.append(("mixture", MIXTURE, run(merged(base, adapter_dirs, MIXTURE), prompt_ids)))
    if any(r[2] == base_run[2] for _, _, r in cases[1:]):
        log(f"{name}: seed {seed} has an adapter case with the base model's greedy text; redrawing")
        return None
    margin = min(c[2][3] for c in cases)
    if margin <= MARGIN_MIN:
        log(f"{name}: seed {seed} has a token won by only {margin:.5f}; redrawing")
        return None

    if args.transformers4:
        v4_config(args.transformers4, model_type, overrides, rope, d / "config.v4.json")
        v4_dir = OUT / "_v4_check"
        shutil.rmtree(v4_dir, ignore_errors=True)
        shutil.copytree(d, v4_dir)
        shutil.copy(d / "config.v4.json", v4_dir / "config.json")
        diff = float((all_logits(load_f32(v4_dir), prompt_ids) - all_logits(base, prompt_ids)).abs().max())
        shutil.rmtree(v4_dir)
        assert diff == 0.0, f"{name}: transformers 5 reads the 4.x config to other logits ({diff})"

    off = feature_off(name, model_type, overrides, rope, feature, d)
    off_diff = None
    if off is not None:
        off_diff = float((all_logits(off, prompt_ids) - all_logits(base, prompt_ids)).abs().max())
        assert off_diff > FEATURE_MIN, f"{name}: turning {feature} off moves logits by only {off_diff}"
    log(f"{name}: seed {seed}, margin {margin:.4f}, {feature} off moves logits by {off_diff}")
    return dict(
        name=name, model_type=model_type, feature=feature, feature_off_max_logit_diff=off_diff,
        rope_parameters=rope, min_margin=margin,
        cases=[dict(name=c, adapters=[dict(path=f"{name}/{a}", weight=w) for a, w in ad],
                    top_logits=r[1], greedy_ids=r[2]) for c, ad, r in cases],
    )

CONVERT = """
import runpy, sys
root = sys.argv.pop(1)
sys.path[:0] = [root, root + "/gguf-py"]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv[0] = root + "/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def convert_to_gguf(converter, name):
    """`model.gguf` by llama.cpp's converter, or the reason it could not convert."""
    d = OUT / name
    work = OUT / "_convert"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for f in ("model.safetensors", "config.json"):
        shutil.copy(d / f, work / f)
    shutil.copy(OUT / "tokenizer.json", work / "tokenizer.json")
    (work / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    done = subprocess.run(
        [sys.executable, "-c", CONVERT, str(converter), str(work), "--outtype", "f16", "--outfile", str(d / "model.gguf")],
        capture_output=True, text=True,
    )
    shutil.rmtree(work)
    if done.returncode != 0:
        (d / "model.gguf").unlink(missing_ok=True)
        reason = done.stderr.strip().splitlines()[-1]
        log(f"{name}: llama.cpp's converter failed: {reason}")
        return reason
    log(f"{name}: model.gguf by llama.cpp's converter, {(d / 'model.gguf').stat().st_size} bytes")
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--transformers4", type=Path, help="folder with transformers 4.x (pip install --target)")
    ap.add_argument("--llama-convert", type=Path, help="folder with llama.cpp's convert_hf_to_gguf.py")
    ap.add_argument("--convert-only", action="store_true", help="only convert the committed fixtures to GGUF")
    args = ap.parse_args()
    if args.convert_only:
        manifest = json.loads((OUT / "reference.json").read_text())
        for entry in manifest["models"]:
            entry["gguf_unconverted"] = convert_to_gguf(args.llama_convert, entry["name"])
        (OUT / "reference.json").write_text(json.dumps(manifest, indent=1) + "\n")
        return
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    assert transformers.__version__.startswith("5."), "the reference runs transformers 5"
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    tok = train_tokenizer(OUT / "tokenizer.json")
    prompt_ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    assert ORIGINAL_CONTEXT < len(prompt_ids) + N_GREEDY < SHAPE["max_position_embeddings"], len(prompt_ids)
    log(f"tokenizer: {tok.vocab_size} tokens; prompt of {len(prompt_ids)} ids")

    manifest = dict(
        transformers=transformers.__version__, peft=peft.__version__, prompt=PROMPT, prompt_ids=prompt_ids,
        n_greedy=N_GREEDY, feature_min=FEATURE_MIN, models=[],
    )
    for index, (name, (model_type, overrides, rope, feature)) in enumerate(ARCHS.items(), start=1):
        # Random draws where a token is won by a hair are redrawn (see MARGIN_MIN).
        for attempt in range(20):
            entry = make_model(args, name, model_type, overrides, rope, feature, 100 * index + attempt, prompt_ids)
            if entry is not None:
                break
        else:
            raise AssertionError(f"{name}: no draw in 20 had every token won by {MARGIN_MIN}")
        if args.llama_convert:
            entry["gguf_unconverted"] = convert_to_gguf(args.llama_convert, name)
        manifest["models"].append(entry)
    (OUT / "reference.json").write_text(json.dumps(manifest, indent=1) + "\n")
    log("wrote", OUT / "reference.json")


if __name__ == "__main__":
    main()
