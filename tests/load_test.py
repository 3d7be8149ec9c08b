"""Load test of a running `loramux serve` on loopback: N concurrent streaming clients, bounded
in time, over registered adapters plus auto-routed prompts, then the same load on the base
model only. Prints requests, errors (429s counted apart), aggregate tokens/s, p50/p99 time to
first token, and the adapters/base throughput ratio.

Usage (scripts/load-test.sh starts the server and registers the adapters):
  python tests/load_test.py URL --clients 64 --seconds 60 --adapters id1,id2,...
"""

import argparse
import asyncio
import json
import random
import statistics
import time

import httpx

PROMPTS = [
    "Give me a recipe for tomato soup",
    "How long should I bake a chocolate cake?",
    "Can I deduct my home office from my taxes?",
    "Explain what a binary search tree is",
    "Write a short poem about the sea",
    "What is the capital gains tax rate?",
    "How do I fix a flat bicycle tyre?",
    "Summarize the plot of Hamlet in two sentences",
]


async def one_request(client, url, model, max_tokens, stats, deadline):
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0.7,
            "messages": [{"role": "user", "content": random.choice(PROMPTS)}]}
    start = time.perf_counter()
    first = None
    tokens = 0
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
            if resp.status_code == 429:
                stats["rejected"] += 1
                await resp.aread()
                return
            if resp.status_code != 200:
                stats["errors"] += 1
                await resp.aread()
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    stats["errors"] += 1
                    return
                delta = chunk["choices"][0].get("delta", {}).get("content")
                # Tokens after the deadline are not counted: the phase's rate is over its
                # own seconds, not over the tail where fewer clients are still running.
                if delta and time.perf_counter() <= deadline:
                    tokens += 1
                    if first is None:
                        first = time.perf_counter() - start
        stats["requests"] += 1
        stats["tokens"] += tokens
        if first is not None:
            stats["ttft"].append(first)
    except httpx.HTTPError:
        stats["errors"] += 1


async def run(url, clients, seconds, models, max_tokens):
    stats = {"requests": 0, "errors": 0, "rejected": 0, "tokens": 0, "ttft": []}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as client:
        async def worker():
            while time.perf_counter() < deadline:
                await one_request(client, url, random.choice(models), max_tokens, stats, deadline)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = min(time.perf_counter(), deadline) - start
    ttft = sorted(stats["ttft"]) or [float("nan")]
    pct = lambda q: ttft[min(len(ttft) - 1, int(q * len(ttft)))]
    return {"requests": stats["requests"], "errors": stats["errors"], "rejected_429": stats["rejected"],
            "tokens": stats["tokens"], "tokens_per_s": stats["tokens"] / elapsed,
            "ttft_p50_s": pct(0.5), "ttft_p99_s": pct(0.99), "seconds": elapsed}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--adapters", default="")
    a = p.parse_args()
    adapters = [x for x in a.adapters.split(",") if x]
    mixed = adapters + ["auto"] * max(1, len(adapters) // 4)
    results = {}
    for name, models in [("adapters+auto", mixed), ("base only", ["base"])]:
        r = asyncio.run(run(a.url, a.clients, a.seconds, models, a.max_tokens))
        results[name] = r
        print(f"{name:14s} requests {r['requests']:5d}  errors {r['errors']}  429s {r['rejected_429']}  "
              f"tokens/s {r['tokens_per_s']:7.1f}  ttft p50 {r['ttft_p50_s']*1000:7.0f} ms  p99 {r['ttft_p99_s']*1000:7.0f} ms")
    ratio = results["adapters+auto"]["tokens_per_s"] / max(results["base only"]["tokens_per_s"], 1e-9)
    print(f"aggregate tokens/s ratio, adapters+auto / base only: {ratio:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
