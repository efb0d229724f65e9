#!/usr/bin/env python
"""Concurrency soak: many threads calling one loaded SavedModel at once.

    python tests/fuzz/soak.py --model models/chargen [--threads 16] [--calls 1000] [--json OUT]

A fixed, seeded mix of calls (generate with per-row prompts, seeds, max_lengths,
temperatures, top_k/top_p; serving_default; score) is first run once single-threaded: the
reference. Then ``--threads`` threads each make ``--calls`` calls from the mix, in their own
random order, on the same loaded model. Every deterministic call (each generate row seeded
or greedy, serving_default with a seeded or greedy default, score) must return exactly its
reference outputs; unseeded sampled rows must keep the output contract. Any exception is an
error. Exit code 1 on any error or mismatch.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import threading
import time

import fuzz_signatures as fz  # beside this file: on sys.path when run as a script, and in pytest
import numpy as np

PROMPTS = [b"Today ", b"On Sunday ", b"", b"Stocks rise as oil falls", "Zürich 😀 日本".encode(), b"\xff\xfeab",
           b"Google IPO " * 30, b"a\x00b", "e\u0301".encode() * 20, b"Red Sox"]


def make_mix(seed: int = 0, n: int = 48, default_deterministic: bool = False
             ) -> list[tuple[str, list[bytes], dict | None, list[bool]]]:
    """(signature, prompts, controls, deterministic row flags) for n calls.

    serving_default rows are deterministic only if the export's defaults are greedy or
    seeded (``default_deterministic``)."""
    rng = random.Random(seed)
    mix = []
    for i in range(n):
        kind = ("generate", "generate", "generate", "serving_default", "score")[i % 5]
        batch = rng.choice([1, 1, 2, 3, 4, 8])
        prompts = [rng.choice(PROMPTS) for _ in range(batch)]
        if kind != "generate":
            mix.append((kind, prompts, None, [kind == "score" or default_deterministic] * batch))
            continue
        ctrl = dict(max_length=[rng.choice([0, 1, 5, 20, 40, 80, 160]) for _ in range(batch)],
                    temperature=[rng.choice([0.0, 0.3, 0.8, 1.0, 1.5]) for _ in range(batch)],
                    top_k=[rng.choice([0, 0, 1, 5, 20]) for _ in range(batch)],
                    top_p=[rng.choice([1.0, 1.0, 0.9, 0.5]) for _ in range(batch)],
                    seed=[rng.choice([rng.randint(1, 2**62), rng.randint(1, 1000), -rng.randint(1, 2**40)])
                          for _ in range(batch)])
        if i % 7 == 0:  # one unseeded sampled row: nondeterministic by design, contract only
            ctrl["seed"][0], ctrl["temperature"][0] = 0, 1.0
        deterministic = [s != 0 or t == 0 for s, t in zip(ctrl["seed"], ctrl["temperature"])]
        mix.append((kind, prompts, ctrl, deterministic))
    return mix


def compare(kind, prompts, ctrl, det, out, ref, model, default_max_length) -> str | None:
    """None if ``out`` matches the reference on every deterministic row, else what differs."""
    for key, want in ref.items():
        got = out[key]
        if got.shape != want.shape:
            return f"{key} shape {got.shape} != {want.shape}"
        for i, d in enumerate(det):
            if d and got[i] != want[i]:
                return f"{key}[{i}] {got[i]!r} != single-threaded {want[i]!r}"
    if kind == "generate" and not all(det):
        fz.check_generate(model, prompts, ctrl["max_length"], out)
    elif kind == "serving_default":
        fz.check_generate(model, prompts, [default_max_length or fz.CAP] * len(prompts), out,
                          exact=bool(default_max_length))
    return None


def soak(model: fz.Model, threads: int = 16, calls: int = 1000, seed: int = 0,
         default_max_length: int | None = None, default_deterministic: bool = False) -> dict:
    mix = make_mix(seed, default_deterministic=default_deterministic)
    refs = [model.call(kind, prompts, ctrl) for kind, prompts, ctrl, _ in mix]  # single-threaded
    errors, mismatches, latencies = [], [], []
    counts = collections.Counter()
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(t):
        rng = random.Random(seed * 1000 + t)
        local = []
        start.wait()  # all threads hammer the model at once
        for _ in range(calls):
            j = rng.randrange(len(mix))
            kind, prompts, ctrl, det = mix[j]
            t0 = time.perf_counter()
            try:
                out = model.call(kind, prompts, ctrl)
                local.append(time.perf_counter() - t0)
                diff = compare(kind, prompts, ctrl, det, out, refs[j], model, default_max_length)
            except AssertionError as e:
                diff = f"contract: {e}"
            except Exception as e:  # noqa: BLE001 - any exception is the finding
                with lock:
                    errors.append(f"thread {t}, call {j} ({kind}): {type(e).__name__}: {str(e)[:300]}")
                continue
            with lock:
                counts[kind] += 1
                if diff:
                    mismatches.append(f"thread {t}, call {j} ({kind}): {diff}")
        with lock:
            latencies.extend(local)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {
        "model": model.path, "threads": threads, "calls_per_thread": calls, "calls": threads * calls,
        "distinct_calls": len(mix), "deterministic_rows": sum(sum(d) for *_, d in mix),
        "rows": sum(len(d) for *_, d in mix), "calls_by_signature": dict(sorted(counts.items())),
        "errors": len(errors), "mismatches": len(mismatches),
        "wall_seconds": round(wall, 1), "calls_per_second": round(threads * calls / wall, 1),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)) * 1e3, 2),
                       "p99": round(float(np.percentile(lat, 99)) * 1e3, 2),
                       "max": round(float(lat.max()) * 1e3, 2)},
        "first_errors": errors[:10], "first_mismatches": mismatches[:10],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a version directory or an export base (newest version)")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--calls", type=int, default=1000, help="calls per thread")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--default-max-length", type=int, help="the export's --default-max-length (if known)")
    p.add_argument("--default-deterministic", action="store_true",
                   help="the export's serving_default is greedy or seeded: compare it exactly too")
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args(argv)
    import tensorflow as tf

    summary = soak(fz.Model(args.model), args.threads, args.calls, args.seed, args.default_max_length,
                   args.default_deterministic)
    summary["environment"] = {"tensorflow": tf.__version__, "cpus": os.cpu_count()}
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 1 if summary["errors"] or summary["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
