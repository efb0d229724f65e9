"""Serving load: N concurrent clients x M requests, requests/second and p50/p99 latency.

    python benchmarks/serving_load.py                       # trains a --preset tiny model first
    python benchmarks/serving_load.py --model models/chargen --clients 1,4,16 --requests 20
    python benchmarks/serving_load.py --model M --url http://127.0.0.1:8501 --grpc 127.0.0.1:8500
    python benchmarks/serving_load.py --model M --standin   # + the test stand-in server

Targets (each run with every --clients count; each client is a thread sending --requests
requests one after another, each request a batch of --batch prompts):

    savedmodel      the SavedModel's `generate` signature called in this process
                    (tf.saved_model.load): no network, no serialization; the ceiling
    rest, grpc      a real model server (TF Serving) at --url (REST) / --grpc (gRPC), through
                    tfchargen.client
    standin_rest,   tests/serving_standin.py started in THIS process on the same model: the
    standin_grpc    stand-in used by the tests, NOT TensorFlow Serving (Python HTTP/gRPC
                    servers sharing the GIL with the client threads; no request batching).
                    Its numbers measure the clients' and protocols' overhead, not TF Serving.

Reported per (target, clients): requests/s and new characters/s over the wall time of the
run, and per-request latency percentiles (ms). Each target gets a few warm-up requests
first (tracing). Seeded requests (seed = request number) make every run generate the same
text. This is a benchmark, not a test: the numbers depend on the machine and its load,
which is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))  # serving_standin (test code)

from train_throughput import machine_info  # noqa: E402

from tfchargen.client import GrpcClient, RestClient, ServingError  # noqa: E402

DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "ag_news_csv", "test.csv")
PROMPTS = ["Today ", "On Sunday ", "Stocks ", "Oil prices ", "Microsoft ", "The U.S. ", "Red Sox ", "Iraq "]


def train_tiny(work_dir: str, data: str) -> str:
    """`tfchargen train --preset tiny` (about a minute); returns the export base."""
    run_dir, base = os.path.join(work_dir, "tiny"), os.path.join(work_dir, "export")
    cmd = [sys.executable, "-m", "tfchargen", "train", "--preset", "tiny", "--run-dir", run_dir,
           "--train-data", f"csv:{os.path.abspath(data)}[:6000]", "--seed", "3", "--sample-every", "0",
           "--export-base", base]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    return base


def latest_version(model: str) -> str:
    if os.path.exists(os.path.join(model, "saved_model.pb")):
        return model
    versions = sorted(int(d) for d in os.listdir(model) if d.isdigit())
    if not versions:
        raise SystemExit(f"{model} holds no model versions")
    return os.path.join(model, str(versions[-1]))


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
        out = local.client.generate(prompts, max_length=max_length, temperature=temperature, seed=seed)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="export base or version dir (default: train --preset tiny first)")
    p.add_argument("--data", default=DEFAULT_DATA, help="AG News CSV for the tiny model (default: %(default)s)")
    p.add_argument("--url", help="a TF Serving REST address, e.g. http://127.0.0.1:8501")
    p.add_argument("--grpc", help="a TF Serving gRPC address, e.g. 127.0.0.1:8500")
    p.add_argument("--model-name", default="chargen")
    p.add_argument("--standin", action="store_true", help="also run against the test stand-in (not TF Serving)")
    p.add_argument("--no-local", action="store_true", help="skip the in-process SavedModel target")
    p.add_argument("--clients", default="1,4,16", help="comma-separated concurrent client counts")
    p.add_argument("--requests", type=int, default=20, help="requests per client")
    p.add_argument("--batch", type=int, default=1, help="prompts per request")
    p.add_argument("--max-length", type=int, default=100, help="new characters per prompt")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--warmup", type=int, default=3, help="requests per target before measuring")
    p.add_argument("--out", default=os.path.join(HERE, "results", "serving_load.json"))
    args = p.parse_args(argv)
    client_counts = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory() as work:
        model_desc, train_seconds = args.model, None
        if args.model is None:
            print("training --preset tiny ...", flush=True)
            t = time.perf_counter()
            args.model = train_tiny(work, args.data)
            train_seconds = time.perf_counter() - t
            model_desc = "tfchargen train --preset tiny --seed 3 (rows 1-6000), exported"
        path = latest_version(args.model)
        loaded = tf.saved_model.load(path)

        targets = {}
        if not args.no_local:
            targets["savedmodel"] = ("SavedModel in process (tf.saved_model.load)", local_caller(loaded))
        if args.url:
            targets["rest"] = (f"model server REST {args.url}", client_caller(
                lambda: RestClient(args.url, args.model_name, timeout=args.timeout)))
        if args.grpc:
            targets["grpc"] = (f"model server gRPC {args.grpc}", client_caller(
                lambda: GrpcClient(args.grpc, args.model_name, timeout=args.timeout)))
        standin = None
        if args.standin:
            from serving_standin import Standin
            standin = Standin(args.model, args.model_name, workers=max(client_counts) + 2).start()
            targets["standin_rest"] = ("STAND-IN (tests/serving_standin.py, not TF Serving) REST, in this process",
                                       client_caller(lambda: RestClient(standin.rest_url, args.model_name,
                                                                        timeout=args.timeout)))
            targets["standin_grpc"] = ("STAND-IN (tests/serving_standin.py, not TF Serving) gRPC, in this process",
                                       client_caller(lambda: GrpcClient(standin.grpc_target, args.model_name,
                                                                        timeout=args.timeout)))
        if not targets:
            raise SystemExit("nothing to run: drop --no-local or give --url/--grpc/--standin")

        load_before = os.getloadavg()
        results = []
        try:
            for name, (label, call) in targets.items():
                for i in range(args.warmup):
                    call(**request_inputs(10_000 + i, args.batch, args))
                for clients in client_counts:
                    row = {"target": name, "label": label, **run_load(call, clients, args.requests, args)}
                    results.append(row)
                    lat = row["latency_ms"]
                    print(f"{name:13} clients {clients:3}  {row['requests_per_second']:7.1f} req/s  "
                          f"{row['chars_per_second']:9.0f} chars/s  p50 {lat['p50']:7.1f} ms  p99 {lat['p99']:7.1f} ms"
                          f"  errors {row['errors']}", flush=True)
        finally:
            if standin:
                standin.stop()
        load_after = os.getloadavg()

    report = {
        "benchmark": "serving_load",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"model": model_desc, "model_train_seconds": train_seconds, "clients": client_counts,
                   "requests_per_client": args.requests, "batch": args.batch, "max_length": args.max_length,
                   "temperature": args.temperature, "seed": "request number (seeded: same text every run)",
                   "warmup_requests": args.warmup, "url": args.url, "grpc": args.grpc, "standin": args.standin},
        "machine": {**machine_info(), "loadavg_before": load_before, "loadavg_after": load_after},
        "definitions": {
            "requests_per_second": "successful requests / wall seconds from the first to the last request",
            "chars_per_second": "new characters generated (sum of num_chars) / the same wall seconds",
            "latency_ms": "per-request wall time in the client thread (percentiles over all requests)",
            "standin": "tests/serving_standin.py is a Python stand-in used by the tests, NOT TensorFlow Serving: "
                       "no request batching, and it shares this process (and its GIL) with the clients",
        },
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
