"""Per-call latency of the native clients (C, Go) against Python on the same SavedModel.

    python benchmarks/native_latency.py                       # trains + exports the tiny preset first
    python benchmarks/native_latency.py --model models/chargen/1 --model /tmp/tiny/1
    python benchmarks/native_latency.py --model models/chargen --calls 300 --leak-calls 0

One request, the same for every client: the `generate` signature with one prompt "Today ",
max_length 100, greedy (temperature 0), top_k 0, top_p 1, seed 0.

    c        export/c/tfchargen-c --timing --repeat N: clock_gettime around TF_SessionRun
             (input tensors are built per call, outside the timed region)
    go       export/go/tfchargen-go --timing --repeat N: time.Now() around TF_SessionRun
    python   a fresh process: tf.saved_model.load(dir).signatures["generate"], inputs built
             once as tf.constant, perf_counter around the call plus out["text"].numpy()

The first call of each process (graph optimization, first run of the loop) is reported
apart; the rest give each round's median. The clients take turns over --rounds rounds
(each a fresh process) so that a change in machine load hits all of them alike; reported
are the median of the round medians and the best round (load only ever adds time, so on a
shared machine the best round is the least disturbed one), with ratios for both. Also measured: the
wall time of one whole process (start, load, one call, exit) per client, and a leak check
on the first model: the C client's peak RSS after --leak-calls calls against a tenth as
many (wait4 rusage).
This is a benchmark, not a test: the numbers depend on the machine and on whatever else
runs on it, so the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common  # next to this script
from common import REPO

C_BIN = os.path.join(REPO, "export", "c", "tfchargen-c")
GO_BIN = os.path.join(REPO, "export", "go", "tfchargen-go")
PROMPT = "Today "
REQUEST = dict(prompt=PROMPT, max_length=100, temperature=0.0, top_k=0, top_p=1.0, seed=0)

PY_CLIENT = r"""
import json, sys, time
import tensorflow as tf
path, n = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
fn = tf.saved_model.load(path).signatures["generate"]
load_ms = (time.perf_counter() - t0) * 1e3
r = json.loads(sys.argv[3])
inputs = dict(prompt=tf.constant([r["prompt"]]), max_length=tf.constant([r["max_length"]], tf.int32),
              temperature=tf.constant([r["temperature"]], tf.float32), top_k=tf.constant([r["top_k"]], tf.int32),
              top_p=tf.constant([r["top_p"]], tf.float32), seed=tf.constant([r["seed"]], tf.int64))
times = []
for _ in range(n):
    a = time.perf_counter()
    text = fn(**inputs)["text"].numpy()
    times.append((time.perf_counter() - a) * 1e3)
print(json.dumps({"load_ms": load_ms, "times_ms": times, "text": text[0].decode("utf-8", "replace")}))
"""

TIMING_RE = re.compile(r"timing load_ms=(?P<load>[\d.]+) calls=(?P<calls>\d+) first_ms=(?P<first>[\d.]+) "
                       r"median_ms=(?P<median>[\d.]+) mean_ms=(?P<mean>[\d.]+)")


def env():
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def build(go: bool):
    targets = [os.path.join(REPO, "export", "c")] + ([os.path.join(REPO, "export", "go")] if go else [])
    for d in targets:
        r = subprocess.run(["make", "-C", d, f"PYTHON={sys.executable}"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"native_latency: make -C {d} failed:\n{r.stdout}\n{r.stderr}")


def train_tiny(workdir: str, data: str) -> str:
    """The tests' tiny model: the tiny preset, seed 3, rows 1-6000 (generate ignores the export defaults)."""
    run_dir, base = os.path.join(workdir, "run"), os.path.join(workdir, "models")
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for args in (["train", "--preset", "tiny", "--run-dir", run_dir,
                  "--train-data", f"csv:{data}[:{common.TRAIN_ROWS}]",
                  "--eval-data", f"csv:{data}[{common.TRAIN_ROWS}:]", "--seed", "3", "--sample-every", "0"],
                 ["export", "--run-dir", run_dir, "--export-base", base]):
        r = subprocess.run([sys.executable, "-m", "tfchargen", *args], capture_output=True, text=True, env=e, cwd=REPO)
        if r.returncode != 0:
            sys.exit(f"native_latency: tfchargen {args[0]} failed:\n{r.stderr[-3000:]}")
    return os.path.join(base, "1")


def native_args(model: str, calls: int):
    r = REQUEST
    return ["--max-length", str(r["max_length"]), "--temperature", str(r["temperature"]), "--top-k", str(r["top_k"]),
            "--top-p", str(r["top_p"]), "--seed", str(r["seed"]), "--timing", "--repeat", str(calls),
            model, r["prompt"]]


def run_native(binary: str, model: str, calls: int):
    r = subprocess.run([binary, *native_args(model, calls)], capture_output=True, text=True, env=env())
    if r.returncode != 0:
        sys.exit(f"native_latency: {binary} failed: {r.stderr.strip()}")
    m = TIMING_RE.search(r.stderr)
    if not m:
        sys.exit(f"native_latency: no timing line from {binary}: {r.stderr!r}")
    return {"load_ms": float(m["load"]), "first_ms": float(m["first"]), "median_ms": float(m["median"]),
            "mean_ms": float(m["mean"]), "calls": int(m["calls"]), "text": r.stdout.rstrip("\n"),
            "timing_line": r.stderr.strip()}


def run_python(model: str, calls: int):
    r = subprocess.run([sys.executable, "-c", PY_CLIENT, model, str(calls), json.dumps(REQUEST)], capture_output=True,
                       text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if r.returncode != 0:
        sys.exit(f"native_latency: python client failed:\n{r.stderr[-3000:]}")
    d = json.loads(r.stdout)
    t = d["times_ms"]
    rest = t[1:] or t
    return {"load_ms": d["load_ms"], "first_ms": t[0], "median_ms": statistics.median(rest),
            "mean_ms": statistics.fmean(rest), "calls": len(t), "text": d["text"], "times_ms": rest}


def cold_start(kind: str, model: str) -> float:
    """Wall seconds of one whole process: start, load, one call, exit."""
    if kind == "python":
        cmd = [sys.executable, "-c", PY_CLIENT, model, "1", json.dumps(REQUEST)]
    else:
        cmd = [C_BIN if kind == "c" else GO_BIN, *native_args(model, 1)]
    a = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, env=env() if kind != "python" else None)
    if r.returncode != 0:
        sys.exit(f"native_latency: cold start of {kind} failed: {r.stderr[-2000:]!r}")
    return time.perf_counter() - a


def max_rss_kb(binary: str, model: str, calls: int):
    with open(os.devnull, "wb") as devnull:
        p = subprocess.Popen([binary, *native_args(model, calls)], stdout=devnull, stderr=subprocess.PIPE, env=env())
        err = p.stderr.read().decode()
        _, status, usage = os.wait4(p.pid, 0)
        p.stderr.close()
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"native_latency: leak run failed: {err}")
    m = TIMING_RE.search(err)
    return usage.ru_maxrss, (float(m["median"]) if m else None)


def summarize(rounds):
    """Per client: the medians of the rounds' medians etc. (each round a fresh process)."""
    med = statistics.median
    return {"median_ms": med(r["median_ms"] for r in rounds),
            "best_round_median_ms": min(r["median_ms"] for r in rounds),
            "mean_ms": med(r["mean_ms"] for r in rounds),
            "first_call_ms": med(r["first_ms"] for r in rounds), "load_ms": med(r["load_ms"] for r in rounds),
            "round_medians_ms": [round(r["median_ms"], 4) for r in rounds],
            "calls_per_round": rounds[0]["calls"]}


def bench_model(model: str, args, go: bool, leak_check: bool):
    print(f"== {model}", file=sys.stderr)
    clients = ["c", "python"] + (["go"] if go else [])
    rounds = {c: [] for c in clients}
    for i in range(args.rounds):
        for c in clients:
            r = run_python(model, args.calls) if c == "python" else run_native(C_BIN if c == "c" else GO_BIN, model,
                                                                                args.calls)
            rounds[c].append(r)
            print(f"round {i + 1} {c}: median {r['median_ms']:.3f} ms, first {r['first_ms']:.0f} ms", file=sys.stderr)
    texts = {c: rounds[c][-1]["text"] for c in clients}
    latency = {c: summarize(rounds[c]) for c in clients}
    def ratios_of(key):
        r = {"python_over_c": latency["python"][key] / latency["c"][key]}
        if go:
            r["go_over_c"] = latency["go"][key] / latency["c"][key]
            r["python_over_go"] = latency["python"][key] / latency["go"][key]
        return {k: round(v, 3) for k, v in r.items()}
    cold = {c: statistics.median(cold_start(c, model) for _ in range(args.cold_runs)) for c in clients}
    out = {"model": model, "latency_ms": latency, "ratios_median": ratios_of("median_ms"),
           "ratios_best_round": ratios_of("best_round_median_ms"),
           "process_wall_s_one_call": {c: round(v, 3) for c, v in cold.items()},
           "same_text_all_clients": len(set(texts.values())) == 1, "text": texts["c"]}
    if leak_check and args.leak_calls:
        small_n = max(1, args.leak_calls // 10)
        small, _ = max_rss_kb(C_BIN, model, small_n)
        large, median = max_rss_kb(C_BIN, model, args.leak_calls)
        out["leak_check_c"] = {"calls_small": small_n, "max_rss_kb_small": small, "calls_large": args.leak_calls,
                               "max_rss_kb_large": large, "growth_kb": large - small,
                               "per_call_growth_bytes": round((large - small) * 1024 / (args.leak_calls - small_n), 1),
                               "median_ms_in_large_run": median}
        print(f"leak check: {small} KB after {small_n} calls, {large} KB after {args.leak_calls}", file=sys.stderr)
    return out


def toolchains():
    """The C compiler's and Go's versions, beside common.machine_info()."""
    go = shutil.which("go")
    go_version = subprocess.run([go, "version"], capture_output=True, text=True).stdout.strip() if go else None
    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {"cc": cc[0] if cc else None, "go": go_version}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="a SavedModel version dir or export base (repeatable); "
                   "default: train and export the tiny preset into a temp dir")
    p.add_argument("--data", default=common.DEFAULT_DATA,
                   help="AG News CSV for the default tiny model (default: %(default)s)")
    p.add_argument("--calls", type=int, default=300, help="calls per client per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3,
                   help="fresh processes per client, interleaved (default: %(default)s)")
    p.add_argument("--cold-runs", type=int, default=3, help="whole-process runs per client (default: %(default)s)")
    p.add_argument("--leak-calls", type=int, default=10000, help="C client calls in the leak check; 0: skip "
                   "(default: %(default)s)")
    p.add_argument("--no-go", action="store_true", help="leave the Go client out")
    p.add_argument("--out", default=common.result_path(__file__), help="JSON results (default: %(default)s)")
    args = p.parse_args(argv)

    go = not args.no_go and shutil.which("go") is not None
    if not args.no_go and not go:
        print("native_latency: no Go toolchain, leaving Go out", file=sys.stderr)
    build(go)
    try:
        given = [common.latest_version(m) for m in args.model or []]
    except FileNotFoundError as e:
        sys.exit(f"native_latency: {e}")
    machine = {**common.machine_info(probe=True), **toolchains()}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="native-latency-") as tmp:
        models = given or [train_tiny(tmp, args.data)]
        sources = ({m: "given" for m in models} if args.model
                   else {models[0]: "tiny preset, seed 3, trained and exported by this script"})
        results = []
        for i, m in enumerate(models):
            r = bench_model(m, args, go, leak_check=i == 0)
            r["source"] = sources[m]
            config = os.path.join(m, "assets")
            r["vocab_size"] = sum(1 for _ in open(os.path.join(config, "vocab.txt"), encoding="utf-8"))
            results.append(r)
    machine["loadavg_after"] = os.getloadavg()
    common.write_result(args.out, {"benchmark": "native_latency", "request": REQUEST,
                                   "config": {k: v for k, v in vars(args).items() if k != "out"},
                                   "seconds": round(time.time() - started, 1), "results": results},
                        machine=machine)
    for r in results:
        lat = r["latency_ms"]
        print(f"{r['model']}: " + ", ".join(f"{c} {v['median_ms']:.3f} ms" for c, v in lat.items())
              + f"; ratios {r['ratios_median']}; process {r['process_wall_s_one_call']}"
              + (f"; leak check growth {r['leak_check_c']['growth_kb']} KB" if "leak_check_c" in r else ""))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
