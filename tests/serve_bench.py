"""Serving benchmark against a running `loramux serve --adapters-dir DIR` on loopback.

Compare: 32 concurrent streaming clients, each request to one adapter drawn uniformly from
the first N of `a0, a1, ...`, for each N given (`--compare 4,256`), in one run, in
alternating rounds; prints aggregate tokens/s per N, the share of the engine thread's time
spent admitting (leasing and writing bank slots), and the ratio of each N's mean to the
first's.

Soak (`--soak N --pid PID`): the same load over N adapters for `--soak-seconds`, sampling
the server's resident memory every 2 s; prints the samples, and writes rss.csv and rss.png
under `--out`. Exits non-zero when a request fails or the peak exceeds `--rss-limit-mb`.
"""

import argparse
import asyncio
import csv
import json
import os
import sys
import time

import httpx

from load_test import run


async def warm(url, models, clients):
    """One 1-token request per adapter, `clients` at a time: every adapter of the run is in
    the host cache before anything is measured (as S-LoRA keeps all adapters in host
    memory); the bank slots still have to be won during the run."""
    limit = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as client:
        async def one(model):
            async with limit:
                body = {"model": model, "max_tokens": 1,
                        "messages": [{"role": "user", "content": "Hello"}]}
                r = await client.post(f"{url}/v1/chat/completions", json=body)
                r.raise_for_status()
        await asyncio.gather(*(one(m) for m in models))


def engine_seconds(url):
    """The engine thread's admission and forward seconds so far, from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    value = lambda name: float(next(l.split()[1] for l in text.splitlines() if l.startswith(name + " ")))
    return (value("loramux_engine_admission_seconds_total"), value("loramux_engine_forward_seconds_total"))


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def soak(url, clients, seconds, models, max_tokens, pid, samples):
    start = time.perf_counter()
    load = asyncio.ensure_future(run_async(url, clients, seconds, models, max_tokens))
    while not load.done():
        samples.append((time.perf_counter() - start, rss_mb(pid)))
        await asyncio.sleep(2)
    samples.append((time.perf_counter() - start, rss_mb(pid)))
    return load.result()


async def run_async(*args):
    return await asyncio.get_running_loop().run_in_executor(None, lambda: asyncio.run(run(*args)))


def line(name, r):
    return (f"{name:>14s}: requests {r['requests']:5d}  errors {r['errors']}  429s {r['rejected_429']}  "
            f"tokens/s {r['tokens_per_s']:7.1f}  ttft p50 {r['ttft_p50_s'] * 1000:6.0f} ms  "
            f"p99 {r['ttft_p99_s'] * 1000:6.0f} ms")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--compare", default="")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--soak", type=int, default=0)
    p.add_argument("--soak-seconds", type=float, default=120)
    p.add_argument("--pid", type=int)
    p.add_argument("--rss-limit-mb", type=float)
    p.add_argument("--out", default=".")
    a = p.parse_args()
    ids = lambda n: [f"a{i}" for i in range(n)]
    failed = False
    if a.compare:
        counts = [int(n) for n in a.compare.split(",")]
        asyncio.run(warm(a.url, ids(max(counts)), a.clients))
        results = {n: [] for n in counts}
        # Rounds alternate the counts, so a machine that slows down or speeds up during the
        # run weighs on every count alike.
        for round in range(a.rounds):
            for n in counts:
                before = engine_seconds(a.url)
                r = asyncio.run(run(a.url, a.clients, a.seconds, ids(n), a.max_tokens))
                after = engine_seconds(a.url)
                admission, forward = (after[k] - before[k] for k in range(2))
                r["admission_share"] = admission / max(admission + forward, 1e-9)
                results[n].append(r)
                print(line(f"{n} adapters", r) + f"  engine time admitting {100 * r['admission_share']:.1f}%"
                      f"  (round {round + 1})", flush=True)
                failed |= r["errors"] > 0
        mean = lambda n: sum(r["tokens_per_s"] for r in results[n]) / len(results[n])
        for n in counts:
            print(f"{n} adapters: mean aggregate tokens/s {mean(n):.1f} over {a.rounds} rounds")
        for n in counts[1:]:
            print(f"aggregate tokens/s, {n} adapters / {counts[0]} adapters: {mean(n) / max(mean(counts[0]), 1e-9):.3f}")
        print(json.dumps(results))
    if a.soak:
        samples = []
        r = asyncio.run(soak(a.url, a.clients, a.soak_seconds, ids(a.soak), a.max_tokens, a.pid, samples))
        print(line(f"{a.soak} adapters", r))
        print("resident memory (s, MiB): " + "  ".join(f"{t:.0f}:{m:.0f}" for t, m in samples))
        peak = max(m for _, m in samples)
        print(f"peak RSS {peak:.0f} MiB" + (f" (limit {a.rss_limit_mb:.0f} MiB)" if a.rss_limit_mb else ""))
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "rss.csv"), "w", newline="") as f:
            csv.writer(f).writerows([("seconds", "rss_mib"), *samples])
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(7, 3.5))
            ax.plot([t for t, _ in samples], [m for _, m in samples], label="server RSS")
            if a.rss_limit_mb:
                ax.axhline(a.rss_limit_mb, color="red", linestyle="--", label="bound: model + host budget + bank + in flight")
            ax.set_xlabel("seconds")
            ax.set_ylabel("MiB")
            ax.set_title(f"loramux serve, {a.soak} adapters requested uniformly, {a.clients} clients")
            ax.legend()
            fig.tight_layout()
            fig.savefig(os.path.join(a.out, "rss.png"), dpi=120)
        except ImportError:
            print("matplotlib is not installed: no plot")
        failed |= r["errors"] > 0 or (a.rss_limit_mb is not None and peak > a.rss_limit_mb)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
