"""A `generate` call's fixed cost as TF Serving and the C API pay it: the session loader.

    python benchmarks/call_cost.py --model new=models/chargen/2 --model old=/tmp/old/1
    python benchmarks/call_cost.py --model plain=A --model xla=B --rounds 7 --calls 200

Each --model is a SavedModel version directory (or an export base: its newest version),
loaded with `tf.compat.v1.saved_model.loader.load` into its own graph and session, as
tensorflow_model_server and TF_LoadSessionFromSavedModel do, and called through
`Session.make_callable` (no per-call graph lookups) at batch 1, greedy, prompt "Today ":

    max_length 0     validation, splitting, lookups, the prompt pass and decoding: the
                     call's fixed cost
    max_length 1     the same plus one loop step
    max_length 101   per_step_us = (time(101) - time(1)) / 100

The models take turns, --calls calls each per round, over --rounds rounds, so a change in
machine load hits all of them alike; reported are the median of the round medians and the
spread of the round medians (min-max), with ratios to the first --model. Also recorded:
the executed graph nodes of one call (RunOptions FULL_TRACE step stats) at max_length 0
and per loop step. Exports of the same weights made by different commits compare the
commits (<eos> must stay unreachable in 100 greedy steps for per_step_us to mean 100 steps:
the counts of generated characters are recorded).
This is a benchmark, not a test: the numbers depend on the machine and on whatever else
runs on it, so the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF's C++ start-up chatter

import common  # noqa: E402  (next to this script)
import tensorflow as tf  # noqa: E402

LENGTHS = (0, 1, 101)
PROMPT = b"Today "


class Session:
    """One export in its own graph and session, with one callable per max_length."""

    def __init__(self, path):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], path)
        sig = meta.signature_def["generate"]
        self.fetch = {k: v.name for k, v in sig.outputs.items()}
        self.feeds = {n: {sig.inputs[k].name: v for k, v in self._inputs(n).items()} for n in LENGTHS}
        self.calls = {n: self._callable(feed) for n, feed in self.feeds.items()}

    @staticmethod
    def _inputs(max_length):
        return {"prompt": [PROMPT], "max_length": [max_length], "temperature": [0.0], "top_k": [0],
                "top_p": [1.0], "seed": [0]}

    def _callable(self, feed):
        call = self.session.make_callable(list(self.fetch.values()), feed_list=list(feed))
        values = list(feed.values())
        return lambda: call(*values)

    def nodes(self, max_length) -> int:
        meta = tf.compat.v1.RunMetadata()
        self.session.run(self.fetch, self.feeds[max_length], run_metadata=meta,
                         options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE))
        return sum(len(d.node_stats) for d in meta.step_stats.dev_stats)

    def generated(self, max_length) -> int:
        return int(self.session.run(self.fetch, self.feeds[max_length])["num_chars"][0])

    def time_ms(self, max_length, calls) -> float:
        call = self.calls[max_length]
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                   help="an export to measure (repeatable; the first is the reference of the ratios)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default: %(default)s)")
    p.add_argument("--calls", type=int, default=200, help="calls per model, length and round (default: %(default)s)")
    p.add_argument("--out", default=common.result_path(__file__), help="JSON results (default: %(default)s)")
    args = p.parse_args(argv)
    models = dict(m.split("=", 1) if "=" in m else (m, m) for m in args.model)
    machine = common.machine_info(probe=True)
    sessions = {name: Session(common.latest_version(path)) for name, path in models.items()}
    for s in sessions.values():  # first calls (graph optimization, function instantiation) apart
        for n in LENGTHS:
            s.time_ms(n, 5)
    rounds = {name: {n: [] for n in LENGTHS} for name in sessions}
    for r in range(args.rounds):
        for name, s in sessions.items():
            for n in LENGTHS:
                rounds[name][n].append(s.time_ms(n, args.calls if n < 101 else max(args.calls // 10, 5)))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{name} {rounds[name][0][-1]:.3f} ms" for name in sessions), flush=True)
    results = {}
    for name, s in sessions.items():
        med = {n: statistics.median(rounds[name][n]) for n in LENGTHS}
        results[name] = {
            "path": common.latest_version(models[name]),
            "call_ms": {f"max_length_{n}": round(med[n], 4) for n in LENGTHS},
            "call_ms_spread": {f"max_length_{n}": [round(min(rounds[name][n]), 4), round(max(rounds[name][n]), 4)]
                               for n in LENGTHS},
            "per_step_us": round((med[101] - med[1]) / 100 * 1e3, 2),
            "generated_chars_at_101": s.generated(101),
            "nodes_per_call_max_length_0": s.nodes(0),
            "nodes_per_step": (s.nodes(101) - s.nodes(1)) / 100,
        }
    first = next(iter(results))
    for name, r in results.items():
        r["ratio_to_" + first] = {k: round(v / results[first]["call_ms"][k], 3) for k, v in r["call_ms"].items()}
        print(name, r["call_ms"], f"per step {r['per_step_us']} us", f"nodes {r['nodes_per_call_max_length_0']}"
              f" + {r['nodes_per_step']}/step")
    machine["loadavg_after"] = list(os.getloadavg())
    common.write_result(args.out, {"benchmark": "call_cost", "config": {**vars(args), "models": models},
                                   "prompt": PROMPT.decode(), "results": results}, machine=machine)


if __name__ == "__main__":
    main()
