"""Serving load: `tfchargen serve` with request batching on and off, and the SavedModel in process.

    python benchmarks/serving_load.py                       # trains a --preset tiny model first
    python benchmarks/serving_load.py --run-dir runs/agnews --clients 1,4,16,64 --requests 8
    python benchmarks/serving_load.py --model models/chargen --url http://127.0.0.1:8501   # + any TF Serving

Workloads: ``as_trained`` (the model as exported: a request ends at its first <eos>, so
lengths vary up to --max-length) and, with --run-dir, ``full_length`` (the same weights
exported with <eos> made impossible, as generate_throughput.py does: every request
generates exactly --max-length characters). --model gives ``as_trained`` only.

Targets, run in rotation for each --clients count (so a change in the machine's load hits
them all alike); each client is a thread sending --requests requests one after another,
one prompt each, up to --max-length new characters:

    savedmodel    the SavedModel's `generate` signature called in this process
                  (tf.saved_model.load): no network, no serialization, no batching
    batching_on   `tfchargen serve` (a subprocess) with --max-batch 64 and the default timeout,
                  called over REST through tfchargen.serving.client
    batching_off  the same server with --max-batch 1: every request runs on its own
    rest          a model server (e.g. TF Serving) at --url, if given

Reported per (target, clients, round): requests/s and new characters/s over the wall time,
per-request latency percentiles (ms), and for the servers the mean rows per merged call;
then per clients count the median and range over --rounds of batching on ÷ off. Each target gets a few warm-up
requests first.
Seeded requests (seed = request number) make every run generate the same text. This is a
benchmark, not a test: the numbers depend on the machine and its load, recorded with them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # next to this script
import numpy as np
import tensorflow as tf
from common import DEFAULT_DATA, REPO

from tfchargen.contract import Controls
from tfchargen.savedmodel import export as export_lib
from tfchargen.serving.batching import DEFAULT_TIMEOUT_MS
from tfchargen.serving.client import RestClient, ServingError

PROMPTS = ["Today ", "On Sunday ", "Stocks ", "Oil prices ", "Microsoft ", "The U.S. ", "Red Sox ", "Iraq "]


def train_tiny(work_dir: str, data: str) -> str:
    """`tfchargen train --preset tiny` (about a minute); returns the run dir."""
    run_dir = os.path.join(work_dir, "tiny")
    cmd = [sys.executable, "-m", "tfchargen", "train", "--preset", "tiny", "--run-dir", run_dir,
           "--train-data", f"csv:{os.path.abspath(data)}[:6000]", "--seed", "3", "--sample-every", "0"]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    return run_dir


def export_workloads(run_dir: str, work_dir: str) -> dict[str, str]:
    """{workload: export base}: the run as trained, and with <eos> impossible (full length)."""
    import generate_throughput  # next to this script: its <eos>-suppressed copy of a run

    bases = {"as_trained": os.path.join(work_dir, "as_trained", "chargen"),
             "full_length": os.path.join(work_dir, "full_length", "chargen")}
    export_lib.export(run_dir, bases["as_trained"], log=lambda *_: None)
    no_eos = generate_throughput.prepare_run(argparse.Namespace(run_dir=run_dir), os.path.join(work_dir, "no_eos"))
    export_lib.export(no_eos, bases["full_length"], log=lambda *_: None)
    return bases





def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`python -m tfchargen serve` on a free port (REST only), until stop()."""

    def __init__(self, model: str, name: str, *flags):
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "tfchargen", "serve", "--model", model, "--model-name", name,
                    "--port", str(self.port), "--grpc-port", "0", *flags]
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        for line in self.proc.stderr:
            if " on REST " in line:
                break
        else:
            raise SystemExit(f"server did not start: {' '.join(self.cmd)}")
        threading.Thread(target=collections.deque, args=(self.proc.stderr, 0), daemon=True).start()  # drain its log

    def batching(self) -> tuple[int, int]:
        """(merged calls, rows they held) of `generate` so far, from the server's metrics."""
        import re
        import urllib.request

        with urllib.request.urlopen(self.url + "/monitoring/prometheus/metrics", timeout=30) as r:
            text = r.read().decode()
        counts = dict.fromkeys(("batches", "batched_rows"), 0)
        for m in re.finditer(r'tfchargen_(batches|batched_rows)_total\{[^}]*signature="generate"[^}]*\} (\d+)', text):
            counts[m.group(1)] += int(m.group(2))
        return counts["batches"], counts["batched_rows"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def request_inputs(i: int, batch: int, args) -> dict:
    return dict(prompts=[PROMPTS[(i + j) % len(PROMPTS)] for j in range(batch)], max_length=args.max_length,
                temperature=args.temperature, seed=[i * batch + j + 1 for j in range(batch)])


def local_caller(loaded):
    fn = loaded.signatures["generate"]

    def call(prompts, max_length, temperature, seed):
        n = len(prompts)
        out = fn(prompt=tf.constant(prompts), max_length=tf.fill([n], max_length),
                 temperature=tf.fill([n], tf.constant(temperature, tf.float32)), top_k=tf.zeros([n], tf.int32),
                 top_p=tf.ones([n]), seed=tf.constant(seed, tf.int64))
        return int(out["num_chars"].numpy().sum())
    return call


def client_caller(make_client):
    local = threading.local()  # one client (connection) per thread, like independent callers

    def call(prompts, max_length, temperature, seed):
        if not hasattr(local, "client"):
            local.client = make_client()
        out = local.client.generate(prompts, Controls(max_length=max_length, temperature=temperature, seed=seed))
        return int(np.sum(out["num_chars"]))
    return call


def run_load(call, clients: int, requests: int, args) -> dict:
    latencies, chars, errors = [], [], []
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1)

    def worker(c):
        start_barrier.wait()
        for r in range(requests):
            i = c * requests + r
            t = time.perf_counter()
            try:
                n = call(**request_inputs(i, args.batch, args))
            except (ServingError, tf.errors.OpError) as e:
                with lock:
                    errors.append(str(e)[:200])
                continue
            dt = time.perf_counter() - t
            with lock:
                latencies.append(dt)
                chars.append(n)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start_barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"clients": clients, "requests": clients * requests, "batch": args.batch, "ok": len(latencies),
            "errors": len(errors), "error_samples": errors[:3], "wall_seconds": wall,
            "requests_per_second": len(latencies) / wall, "chars_per_second": sum(chars) / wall,
            "latency_ms": {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                           "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "max": float(ms.max())}}


def start_targets(base: str, loaded, args, wanted, servers: list) -> dict:
    """{target: (label, call)} for one workload's export base; servers started are appended."""
    targets = {}
    if "savedmodel" in wanted:
        targets["savedmodel"] = ("SavedModel in process (tf.saved_model.load)", local_caller(loaded), None)
    for name, batch in (("batching_on", args.max_batch), ("batching_off", 1)):
        if name in wanted:
            s = ServeProcess(base, args.model_name, "--max-batch", str(batch),
                             "--batch-timeout-ms", str(args.batch_timeout_ms),
                             "--batch-threads", str(args.batch_threads))
            servers.append(s)
            targets[name] = (" ".join(["tfchargen serve", *s.cmd[4:]]), client_caller(
                lambda url=s.url: RestClient(url, args.model_name, timeout=args.timeout)), s)
    if args.url and "rest" in wanted:
        targets["rest"] = (f"model server REST {args.url}", client_caller(
            lambda: RestClient(args.url, args.model_name, timeout=args.timeout)), None)
    for call in (call for _, call, _ in targets.values()):
        for i in range(args.warmup):
            call(**request_inputs(10_000 + i, 1, args))
    return targets


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", help="a trained run: both workloads (default: train --preset tiny first)")
    p.add_argument("--model", help="an export base or version dir instead: the as_trained workload only")
    p.add_argument("--data", default=DEFAULT_DATA, help="AG News CSV for the tiny model (default: %(default)s)")
    p.add_argument("--url", help="also a model server's REST address serving --model, e.g. http://127.0.0.1:8501")
    p.add_argument("--model-name", default="chargen")
    p.add_argument("--targets", default="savedmodel,batching_on,batching_off")
    p.add_argument("--clients", default="1,4,16,64", help="comma-separated concurrent client counts")
    p.add_argument("--requests", type=int, default=8, help="requests per client and round")
    p.add_argument("--rounds", type=int, default=3, help="rotations over the targets per client count")
    p.add_argument("--max-length", type=int, default=100, help="new characters per prompt")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--batch-timeout-ms", type=float, default=DEFAULT_TIMEOUT_MS)
    p.add_argument("--batch-threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--warmup", type=int, default=3, help="requests per target before measuring")
    p.add_argument("--out", default=common.result_path(__file__), help="JSON results (default: %(default)s)")
    args = p.parse_args(argv)
    if args.model and args.run_dir:
        p.error("give --run-dir or --model, not both")
    if args.url and not args.model:
        p.error("--url needs --model (the export the server at --url serves)")
    args.batch = 1
    client_counts = [int(c) for c in args.clients.split(",")]
    wanted = args.targets.split(",") + (["rest"] if args.url else [])

    with tempfile.TemporaryDirectory() as work:
        model_desc, train_seconds = args.model or args.run_dir, None
        if args.model:
            bases = {"as_trained": args.model}
        else:
            if args.run_dir is None:
                print("training --preset tiny ...", flush=True)
                t = time.perf_counter()
                args.run_dir = train_tiny(work, args.data)
                train_seconds = time.perf_counter() - t
                model_desc = "tfchargen train --preset tiny --seed 3 (rows 1-6000)"
            bases = export_workloads(args.run_dir, work)
        results, load_before = [], os.getloadavg()
        for workload, base in bases.items():
            servers = []
            try:
                targets = start_targets(base, tf.saved_model.load(common.latest_version(base)), args, wanted, servers)
                for clients, rnd in ((c, r) for c in client_counts for r in range(args.rounds)):
                    for name, (label, call, server) in targets.items():  # in rotation
                        before = server.batching() if server else None
                        row = {"workload": workload, "target": name, "label": label, "round": rnd,
                               **run_load(call, clients, args.requests, args)}
                        if server:
                            calls, rows = (a - b for a, b in zip(server.batching(), before))
                            row["mean_rows_per_call"] = rows / calls if calls else None  # None: not batched
                        results.append(row)
                        lat = row["latency_ms"]
                        print(f"{workload:11} {name:13} clients {clients:3}  {row['requests_per_second']:7.1f} req/s  "
                              f"{row['chars_per_second']:9.0f} chars/s  p50 {lat['p50']:7.1f} ms  "
                              f"p99 {lat['p99']:7.1f} ms  rows/call {row.get('mean_rows_per_call') or 1:5.1f}  "
                              f"errors {row['errors']}", flush=True)
            finally:
                for s in servers:
                    s.stop()
        load_after = os.getloadavg()

    report = {
        "benchmark": "serving_load",
        "config": {"model": model_desc, "model_train_seconds": train_seconds, "workloads": list(bases),
                   "clients": client_counts, "rounds": args.rounds, "requests_per_client": args.requests,
                   "prompts_per_request": 1,
                   "max_length": args.max_length, "temperature": args.temperature,
                   "seed": "request number (seeded: same text every run)", "max_batch": args.max_batch,
                   "batch_timeout_ms": args.batch_timeout_ms, "batch_threads": args.batch_threads,
                   "warmup_requests": args.warmup, "url": args.url},
        "definitions": {
            "as_trained": "the model as exported: a request ends at its first <eos> (lengths vary)",
            "full_length": "the same weights with <eos> impossible: every request generates max_length characters",
            "requests_per_second": "successful requests / wall seconds from the first to the last request",
            "chars_per_second": "new characters generated (sum of num_chars) / the same wall seconds",
            "latency_ms": "per-request wall time in the client thread (percentiles over all requests)",
            "batching_off": "tfchargen serve --max-batch 1: each request runs alone, concurrently",
            "mean_rows_per_call": "rows / signature calls of generate during the run (the server's metrics)",
            "batching_speedup": "per round, batching_on / batching_off requests/s; the median and range over "
                                "rounds; p99: medians over rounds",
        },
        "results": results,
    }
    for workload in bases:
        for clients in client_counts:
            rows = collections.defaultdict(list)  # target -> its rows, by round
            for r in results:
                if r["clients"] == clients and r["workload"] == workload:
                    rows[r["target"]].append(r)
            if "batching_on" in rows and "batching_off" in rows:
                ratios = [on["requests_per_second"] / off["requests_per_second"]
                          for on, off in zip(rows["batching_on"], rows["batching_off"])]
                med = lambda target, key, rows=rows: float(np.median([key(r) for r in rows[target]]))  # noqa: E731
                report.setdefault("batching_speedup", {}).setdefault(workload, {})[str(clients)] = {
                    "requests_per_second": round(float(np.median(ratios)), 2),
                    "requests_per_second_range": [round(min(ratios), 2), round(max(ratios), 2)],
                    "p99_ms_on_vs_off": [round(med(t, lambda r: r["latency_ms"]["p99"]), 1)
                                         for t in ("batching_on", "batching_off")]}
    machine = {**common.machine_info(), "loadavg_before": load_before, "loadavg_after": load_after}
    common.write_result(args.out, report, machine=machine, argv=None if argv is None else [__file__, *argv])
    print(json.dumps(report.get("batching_speedup", {})))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
