#!/usr/bin/env python
"""Streaming latency: start + continue chunks against one generate call of the same length.

    python benchmarks/stream_latency.py --model models/chargen [--length 200] [--batches 1,64]
        [--chunks 8,32,128] [--repeats 3] [--json benchmarks/results/stream_latency.json]

For each batch size, seeded and unseeded rows side by side: one `generate` call of
``--length`` characters, then streams of each chunk size (tfchargen.generation.streaming.chunks over the
loaded SavedModel): time to the first chunk, to the first 16 characters, total time and
chars/s (rows x characters / total seconds), the median of ``--repeats`` rounds after a
warm-up round, each round running the one-shot call and every stream in turn.
Use a model that does not end its texts early (every row must reach ``--length``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tfchargen.contract import Controls  # noqa: E402
from tfchargen.generation import streaming  # noqa: E402
from tfchargen.savedmodel.call import local_predict  # noqa: E402

FIRST = 16  # "first characters" of the latency goal


def controls(batch, seeded):
    return dict(temperature=[0.8] * batch, top_k=[0] * batch, top_p=[1.0] * batch,
                seed=list(range(1, batch + 1)) if seeded else [0] * batch)


def one_shot(predict, prompts, length, seeded):
    t0 = time.perf_counter()
    n = len(prompts)
    out = predict("generate", {"prompt": prompts, "max_length": [length] * n, **controls(n, seeded)})
    total = time.perf_counter() - t0
    return {"total_s": total, "chars": int(out["num_chars"].sum())}


def streamed(predict, prompts, length, chunk, seeded):
    t0 = time.perf_counter()
    first_chunk = first_16 = None
    got = np.zeros(len(prompts), np.int64)
    for out in streaming.chunks(predict, prompts, Controls(max_length=length, **controls(len(prompts), seeded)), chunk):
        now = time.perf_counter() - t0
        got += out["num_chars"]
        first_chunk = now if first_chunk is None else first_chunk
        if first_16 is None and got.min() >= min(FIRST, length):
            first_16 = now
    total = time.perf_counter() - t0
    return {"first_chunk_s": first_chunk, "first_16_s": first_16, "total_s": total, "chars": int(got.sum())}


def medians(fns, repeats):
    """{name: median of each timing} over ``repeats`` rounds after a warm-up round (first
    calls optimize graphs); each round runs every fn once, in turn, so a burst of load from
    elsewhere on the machine falls on one-shot and streamed runs alike."""
    runs = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            r = fn()
            if round_:
                runs[name].append(r)
    out = {}
    for name, rs in runs.items():
        med = {k: round(statistics.median(r[k] for r in rs), 5) for k in rs[0] if k != "chars"}
        med["chars"] = rs[0]["chars"]
        med["chars_per_s"] = round(med["chars"] / med["total_s"], 1)
        out[name] = med
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a version directory")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--batches", default="1,64")
    p.add_argument("--chunks", default="8,32,128")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args(argv)
    predict = local_predict(tf.saved_model.load(args.model))
    results = []
    for batch in map(int, args.batches.split(",")):
        prompts = [b"Today "] * batch
        for seeded in (True, False):
            fns = {"one_shot": lambda prompts=prompts, seeded=seeded: one_shot(predict, prompts, args.length, seeded)}
            for chunk in map(int, args.chunks.split(",")):
                fns[chunk] = lambda chunk=chunk, prompts=prompts, seeded=seeded: streamed(
                    predict, prompts, args.length, chunk, seeded)
            med = medians(fns, args.repeats)
            base = med.pop("one_shot")
            row = {"batch": batch, "seeded": seeded, "one_shot": base, "streams": {}}
            for chunk, s in med.items():
                s["throughput_vs_one_shot"] = round(s["chars_per_s"] / base["chars_per_s"], 3)
                s["first_16_vs_one_shot_total"] = round(s["first_16_s"] / base["total_s"], 3)
                row["streams"][str(chunk)] = s
            results.append(row)
            print(json.dumps(row), flush=True)
    here = os.path.dirname(os.path.abspath(__file__))
    summary = {
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=here).stdout.strip(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
        "tensorflow": tf.__version__, "model": args.model,
        "command": " ".join(["python", "benchmarks/stream_latency.py", *(sys.argv[1:] if argv is None else argv)]),
        "length": args.length, "repeats": args.repeats, "loadavg_after": os.getloadavg(), "results": results,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
