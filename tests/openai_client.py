"""End-to-end check of a running `loramux serve` with the official `openai` Python client.

Run by scripts/openai-e2e.sh, which starts the real binary on a free loopback port with a
fresh registry (which gets the adapter zoo on this first start). Checks: models list, the
zoo registered and routed to, chat, streaming chat (same greedy text), streamed usage,
content parts, `n` choices (streamed too), chat logprobs, completions echo + logprobs
(log-likelihoods), refusal of unimplemented fields (`response_format`), adapter registration over HTTP, automatic routing to the registered adapter, and a clean 404 for an
unknown model. Exits non-zero on the first failed check.
"""

import json
import os
import sys
import urllib.request

import openai

BASE = os.environ["LORAMUX_URL"]
FIXTURES = os.environ["LORAMUX_FIXTURES"]
TOKEN = os.environ["LORAMUX_ADMIN_TOKEN"]

client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="unused")


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    print(f"ok: {what}")


models = [m.id for m in client.models.list().data]
check("auto" in models, f"models list has auto: {models}")

zoo = {"reverse_words", "iso_date", "extract_emails", "sentiment"}
check(zoo <= set(models), f"the adapter zoo is registered on first start: {models}")

ask = [{"role": "user", "content": "What is the capital of France?"}]
chat = client.chat.completions.create(model="base", messages=ask, max_tokens=16, temperature=0)
text = chat.choices[0].message.content
check(isinstance(text, str) and len(text) > 0, f"chat answers: {text!r}")
check(chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens, "usage adds up")

pieces = []
for chunk in client.chat.completions.create(model="base", messages=ask, max_tokens=16, temperature=0, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
check("".join(pieces) == text, "streamed text equals the non-streamed text")

# stream_options.include_usage: one last chunk with no choices and the same usage.
usage_chunks = [c for c in client.chat.completions.create(
    model="base", messages=ask, max_tokens=16, temperature=0, stream=True,
    stream_options={"include_usage": True}) if c.usage is not None]
check(len(usage_chunks) == 1 and usage_chunks[0].choices == []
      and usage_chunks[0].usage.total_tokens == chat.usage.total_tokens,
      f"stream_options.include_usage adds the usage chunk: {usage_chunks}")

# Content as an array of text parts (what newer clients send) is the same prompt.
parts = [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]
as_parts = client.chat.completions.create(model="base", messages=parts, max_tokens=16, temperature=0)
check(as_parts.choices[0].message.content == text, "content parts give the same answer as the string")

# n choices: n seeded sequences, usage summed; streamed side by side under their index.
several = client.chat.completions.create(model="base", messages=ask, max_tokens=8, temperature=1.0, seed=7, n=3)
check([c.index for c in several.choices] == [0, 1, 2], f"n=3 gives three choices: {several.choices}")
streamed = {0: "", 1: "", 2: ""}
for chunk in client.chat.completions.create(model="base", messages=ask, max_tokens=8, temperature=1.0,
                                            seed=7, n=3, stream=True):
    for c in chunk.choices:
        streamed[c.index] += c.delta.content or ""
check([streamed[i] for i in range(3)] == [c.message.content for c in several.choices],
      f"n=3 streamed gives the same three choices: {streamed}")

# logprobs: one entry per generated token, each a log-probability with its top alternatives;
# greedy decoding picks the most likely token.
scored = client.chat.completions.create(model="base", messages=ask, max_tokens=8, temperature=0,
                                        logprobs=True, top_logprobs=2)
entries = scored.choices[0].logprobs.content
check(len(entries) == scored.usage.completion_tokens
      and all(e.logprob <= 0 and len(e.top_logprobs) == 2 and e.top_logprobs[0].token == e.token
              for e in entries)
      and "".join(e.token for e in entries).startswith(scored.choices[0].message.content),
      f"chat logprobs with top_logprobs: {entries[:2]}")
# Completions as lm-evaluation-harness asks for a log-likelihood: echo the prompt, no new
# tokens; the likelier continuation scores higher.
def loglik(prompt, context):
    r = client.completions.create(model="base", prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    check(r.choices[0].text == prompt and lp.token_logprobs[0] is None, f"echo returns the prompt: {r.choices[0]}")
    start = next(i for i, off in enumerate(lp.text_offset) if off >= len(context))
    return sum(lp.token_logprobs[start:])
paris = loglik("The capital of France is Paris", "The capital of France is")
london = loglik("The capital of France is London", "The capital of France is")
check(paris > london, f"echo + logprobs give log-likelihoods: Paris {paris:.2f} > London {london:.2f}")

# A field loramux does not implement is refused by name, not ignored.
try:
    client.chat.completions.create(model="base", messages=ask, max_tokens=4,
                                   response_format={"type": "json_object"})
    check(False, "response_format is refused")
except openai.BadRequestError as e:
    check(e.body.get("code") == "unsupported_parameter" and "response_format" in e.body.get("message", ""),
          f"response_format is refused as unsupported_parameter: {e.body}")

body = json.dumps({
    "id": "cooking",
    "path": os.path.join(FIXTURES, "r8_qv"),
    "description": "Cooking recipes and kitchen advice",
    # Examples as a user would register them: `auto` routes a prompt only when it is as
    # close to an adapter's texts as the calibrated threshold asks.
    "examples": ["How long should I bake a chocolate cake?", "Give me a recipe for tomato soup",
                 "At what temperature do I roast vegetables?", "How long does a roast chicken take?"],
}).encode()
req = urllib.request.Request(f"{BASE}/v1/adapters", data=body, method="POST",
                             headers={"content-type": "application/json", "authorization": f"Bearer {TOKEN}"})
with urllib.request.urlopen(req) as resp:
    check(resp.status == 201, "adapter registered over HTTP")
check("cooking" in [m.id for m in client.models.list().data], "the new adapter is listed as a model")

routed = client.chat.completions.create(
    model="auto", messages=[{"role": "user", "content": "What temperature should I roast a chicken at?"}],
    max_tokens=8, temperature=0)
routing = routed.model_extra.get("routing", {})
check(routing.get("mode") == "auto" and routing["candidates"][0]["id"] == "cooking", f"auto routing picks it: {routing}")
if routing.get("gate"):
    check("cooking" in routing["gate"]["prior"] and "cooking" not in routing["gate"]["scored"],
          f"the gate was not trained on the new adapter: it keeps its retrieval prior: {routing['gate']}")

date = [{"role": "user", "content": "Rewrite 14 July 2019 as an ISO 8601 date (YYYY-MM-DD)."}]
routed = client.chat.completions.create(model="auto", messages=date, max_tokens=16, temperature=0)
routing = routed.model_extra.get("routing", {})
check(routing["candidates"][0]["id"] == "iso_date", f"a date prompt routes to the zoo's iso_date: {routing}")
if os.path.exists("evaluation/zoo/gate.safetensors"):
    gate = routing.get("gate") or {}
    check(gate.get("kind") == "learned" and "iso_date" in gate.get("scored", []),
          f"auto mixes with the zoo's learned gate, which scores iso_date: {routing}")
    check(routed.choices[0].message.content.strip() == "2019-07-14",
          f"the gated answer: {routed.choices[0].message.content!r}")
    gw = routing.get("gate_weights") or {}
    ids = [w["id"] for w in routing["weights"]]
    check(gw.get("adapters") == ids, f"gate weights name the routed adapters in order: {gw.get('adapters')} vs {ids}")
    check(len(gw.get("per_token", [])) == routed.usage.completion_tokens,
          f"one gate entry per completion token: {len(gw.get('per_token', []))} vs {routed.usage.completion_tokens}")
    check(all(abs(sum(t["weights"]) - 1) < 1e-2 for t in gw["per_token"]),
          "each token's weights sum to 1 (top-k softmax, averaged over layers)")
    check(len(gw.get("per_layer", [])) == 30 and all(len(l) == len(ids) for l in gw["per_layer"]),
          "per-layer weights for the 30 layers")
    # A gate that acts weighs layers by their own hidden states; the retrieval prior would
    # put the same weights in every layer.
    check(len({tuple(l) for l in gw["per_layer"]}) > 1, "the per-layer weights differ: the gate acted")
    top = ids[max(range(len(ids)), key=lambda i: gw["mean"][i])]
    check(top == "iso_date", f"the gate leans on iso_date for a date answer: mean {dict(zip(ids, gw['mean']))}")
    last = None
    for chunk in client.chat.completions.create(model="auto", messages=date, max_tokens=16, temperature=0, stream=True):
        last = (chunk.model_extra or {}).get("routing") or last
    check(last is not None and last.get("gate_weights", {}).get("mean") == gw["mean"],
          "a streamed answer ends with the same gate weights")
# The README's first request: no zoo adapter is for it, so `auto` answers as `base` does.
tips = [{"role": "user", "content": "Give me three tips for learning a language."}]
auto = client.chat.completions.create(model="auto", messages=tips, max_tokens=24, temperature=0)
plain = client.chat.completions.create(model="base", messages=tips, max_tokens=24, temperature=0)
check(auto.model_extra.get("routing", {}).get("mode") == "base",
      f"the README example routes to the base model: {auto.model_extra.get('routing')}")
check(auto.choices[0].message.content == plain.choices[0].message.content,
      f"and answers as base does: {auto.choices[0].message.content!r} vs {plain.choices[0].message.content!r}")
direct = client.chat.completions.create(model="iso_date", messages=date, max_tokens=16, temperature=0)
check(direct.choices[0].message.content.strip() == "2019-07-14",
      f"the zoo adapter answers: {direct.choices[0].message.content!r}")

try:
    client.chat.completions.create(model="no-such-adapter", messages=ask, max_tokens=4)
    check(False, "unknown model is refused")
except openai.NotFoundError as e:
    check(e.body.get("code") == "model_not_found" or "model_not_found" in str(e), "unknown model is a 404 model_not_found")

print("openai client e2e: all checks passed")
