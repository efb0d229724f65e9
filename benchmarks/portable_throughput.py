"""Portable exports against the SavedModel: throughput, time to the first character, size,
agreement of the text, held-out nats/char.

    python benchmarks/portable_throughput.py                       # trains both models briefly
    python benchmarks/portable_throughput.py --teaching-run A --readme-run B --rounds 3

Models (each trained briefly with `tfchargen train`, unless given: throughput does not
depend on how long a model trained):

    teaching    one-hot -> LSTM(128), the teaching example's size
    readme      embedding 64 -> LSTM(512), the README's best model's size

Methods, each generating --length new characters per row from "Today " at temperature 1,
seeded rows (seeds.row_seed(1, row)), <eos> made unreachable (generate_throughput.py's
prepare_run), so every row runs the full length:

    savedmodel        tf.saved_model.load(export).signatures["generate"], exported without XLA
    savedmodel_xla    the same, exported with --xla
    litert_float      portable.loop.generate over portable.litert.Runtime (what `tfchargen
                      generate --model DIR` runs), interpreter threads as the CLI leaves them
    litert_int8       the same, exported with --quantize int8 (dynamic-range int8 weights)
    tfjs_node         `node export/js/bench.mjs DIR` (@tensorflow/tfjs, CPU backend), one
                      process per round; its own timing of one generate call
    tfjs_node_wasm    the same with `--backend wasm` (@tensorflow/tfjs-backend-wasm)

Reported per (model, method, batch): chars/s (median over --rounds alternating rounds, each
method in turn so the machine's drifting load falls on all alike; each round runs a method
for at least 0.2 s) with the spread (min, max), the ratio to savedmodel in the same run,
time to the first character (a loaded model, batch 1, max_length 1: the prompt's steps and
one pick; median), load seconds and the model's bytes on disk.

On the trained (not the <eos>-suppressed) weights of each model:

    agreement   --agreement-rows held-out title starts x --agreement-length characters,
                greedy and seeded (temperature 1): the fraction of rows whose LiteRT text
                (float, and int8) and TF.js text (`node export/js/generate.mjs DIR --backend
                wasm`, all rows in one process) equals the SavedModel's byte for byte
    nats/char   held-out rows 6001-7600 (titles) scored by the SavedModel's `score`
                signature and by LiteRT float and int8 (portable.loop.score)

A benchmark, not a test: the load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402  (next to this script)
import generate_throughput  # noqa: E402  (its prepare_run: <eos> unreachable)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfchargen.contract import Controls  # noqa: E402
from tfchargen.data import sources  # noqa: E402
from tfchargen.generation.seeds import row_seed  # noqa: E402
from tfchargen.portable import litert, loop  # noqa: E402
from tfchargen.savedmodel import export as export_lib  # noqa: E402

PROMPT = "Today "
MODELS = {  # name -> `tfchargen train` flags of its brief training
    "teaching": ["--batch-size", "32", "--learning-rate", "3e-3", "--steps-per-epoch", "300", "--epochs", "4"],
    "readme": ["--units", "512", "--embedding-dim", "64", "--batch-size", "64", "--learning-rate", "3e-3",
               "--steps-per-epoch", "80", "--epochs", "3"],
}
METHODS = ("savedmodel", "savedmodel_xla", "litert_float", "litert_int8", "tfjs_node", "tfjs_node_wasm")
TFJS_BACKENDS = {"tfjs_node": "cpu", "tfjs_node_wasm": "wasm"}  # method -> bench.mjs --backend
AGREEMENT_BACKEND = "wasm"  # generate.mjs --backend for the TF.js agreement rows
BENCH_JS = os.path.join(common.REPO, "export", "js", "bench.mjs")
GENERATE_JS = os.path.join(common.REPO, "export", "js", "generate.mjs")


def dir_bytes(path) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def train(name, run_dir, data):
    cmd = [sys.executable, "-m", "tfchargen", "train", "--run-dir", run_dir, "--train-data",
           f"csv:{data}[:{common.TRAIN_ROWS}]", "--sample-every", "0", "--no-export", *MODELS[name]]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def seeds(n):
    return [row_seed(1, i) for i in range(n)]


# -- the methods: make(batch) -> (call(length) -> chars, info) ------------------------------------
def savedmodel_method(path):
    def make(batch):
        t0 = time.perf_counter()
        sig = tf.saved_model.load(path).signatures["generate"]
        load = time.perf_counter() - t0

        def call(length):
            out = sig(prompt=tf.constant([PROMPT] * batch), max_length=tf.fill([batch], length),
                      temperature=tf.ones([batch]), top_k=tf.zeros([batch], tf.int32), top_p=tf.ones([batch]),
                      seed=tf.constant(seeds(batch), tf.int64))
            return int(out["num_chars"].numpy().sum())
        return call, {"load_seconds": load}
    return make


def litert_method(path):
    def make(batch):
        t0 = time.perf_counter()
        runtime = litert.Runtime(path)
        load = time.perf_counter() - t0

        def call(length):
            c = Controls(max_length=length, temperature=1.0, seed=seeds(batch))
            return int(loop.generate(runtime, [PROMPT] * batch, c)["num_chars"].sum())
        return call, {"load_seconds": load}
    return make


def tfjs_round(path, batch, length, backend):
    """One `node export/js/bench.mjs` process: its JSON line."""
    r = subprocess.run(["node", BENCH_JS, path, "--batch", str(batch), "--length", str(length), "--rounds", "1",
                        "--temperature", "1", "--seed", "1", "--prompt", PROMPT, "--backend", backend],
                       capture_output=True, text=True, timeout=1200)
    if r.returncode != 0:
        raise RuntimeError(f"bench.mjs failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def first_char_seconds(call, reps=7):
    call(1)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call(1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(makes, tfjs_dir, batch, length, rounds):
    """Every method of one batch in alternating rounds (generate_throughput.measure's way)."""
    calls, out = {}, {}
    for name, make in makes.items():
        calls[name], info = make(batch)
        calls[name](length)  # first call: tracing, allocation
        out[name] = {**info, "first_char_seconds": first_char_seconds(calls[name]), "rates": []}
    tfjs_methods = TFJS_BACKENDS if tfjs_dir else {}
    for name in tfjs_methods:
        out[name] = {"rates": [], "first_char_seconds_all": [], "load_seconds_all": []}
    for _ in range(rounds):
        for name, call in calls.items():
            spent, chars = 0.0, 0
            while spent < 0.2:
                t0 = time.perf_counter()
                chars += call(length)
                spent += time.perf_counter() - t0
            out[name]["rates"].append(chars / spent)
        for name, backend in tfjs_methods.items():
            js = tfjs_round(tfjs_dir, batch, length, backend)
            out[name]["rates"].append(js["chars_per_second"])
            out[name]["first_char_seconds_all"] += js["first_char_seconds"]
            out[name]["load_seconds_all"].append(js["load_seconds"])
            out[name]["backend"] = js["backend"]
    for name in tfjs_methods:
        js = out[name]
        js["first_char_seconds"] = statistics.median(js.pop("first_char_seconds_all"))
        js["load_seconds"] = statistics.median(js.pop("load_seconds_all"))
    base = statistics.median(out["savedmodel"]["rates"])
    for r in out.values():
        rates = r.pop("rates")
        r.update(chars_per_second=statistics.median(rates), spread=[min(rates), max(rates)],
                 vs_savedmodel=statistics.median(rates) / base)
    return out


# -- agreement and nats/char on the trained weights -------------------------------------------------
def heldout_titles(data):
    titles = sources.load(f"csv:{data}[{common.TRAIN_ROWS}:]", field="title")
    return [t.decode("utf-8") for t in titles.as_numpy_iterator()]


def tfjs_texts(path, prompts, length, temperature):
    """`node export/js/generate.mjs` over every prompt in one process: row i's text, seed row_seed(1, i)."""
    cmd = ["node", GENERATE_JS, path, "--backend", AGREEMENT_BACKEND, "--max-length", str(length),
           "--temperature", str(temperature), "--seed", "1"]
    for prompt in prompts:
        cmd += ["--prompt", prompt]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"generate.mjs failed: {r.stderr.strip()[-500:]}")
    lines = r.stdout.split("\n")[:-1]
    if len(lines) != len(prompts):
        raise RuntimeError(f"generate.mjs printed {len(lines)} lines for {len(prompts)} prompts")
    return lines


def first_difference(got, want):
    return next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))


def agreement(savedmodel_dir, litert_dirs, prompts, length, tfjs_dir=None, chunk=250):
    sig = tf.saved_model.load(savedmodel_dir).signatures["generate"]
    runtimes = {k: litert.Runtime(d) for k, d in litert_dirs.items()}
    names = [*runtimes, *(["tfjs_node_" + AGREEMENT_BACKEND] if tfjs_dir else [])]
    report = {}
    for mode, temperature in (("greedy", 0.0), ("seeded", 1.0)):
        same = {k: 0 for k in names}
        first_diff = {k: [] for k in names}
        wants = []
        for start in range(0, len(prompts), chunk):
            part = prompts[start:start + chunk]
            n = len(part)
            row_seeds = [row_seed(1, start + i) for i in range(n)] if temperature else [0] * n
            want = sig(prompt=tf.constant(part), max_length=tf.fill([n], length), temperature=tf.fill([n], temperature),
                       top_k=tf.zeros([n], tf.int32), top_p=tf.ones([n]),
                       seed=tf.constant(row_seeds, tf.int64))["text"].numpy().tolist()
            wants += want
            c = Controls(max_length=length, temperature=temperature, seed=row_seeds)
            for k, rt in runtimes.items():
                got = loop.generate(rt, part, c)["text"]
                for g, w in zip(got, want):
                    if g == w:
                        same[k] += 1
                    else:
                        first_diff[k].append(first_difference(g, w))
        if tfjs_dir:
            k = names[-1]
            for g, w in zip(tfjs_texts(tfjs_dir, prompts, length, temperature), wants):
                g = g.encode("utf-8")
                if g == w:
                    same[k] += 1
                else:
                    first_diff[k].append(first_difference(g, w))
        report[mode] = {k: {"rows": len(prompts), "identical": same[k], "identical_fraction": same[k] / len(prompts),
                            "median_first_difference_byte": statistics.median(first_diff[k]) if first_diff[k] else None}
                        for k in names}
    return report


def nats_per_char(savedmodel_dir, litert_dirs, texts, batch=256):
    out = {}
    score = tf.saved_model.load(savedmodel_dir).signatures["score"]
    total = count = 0.0
    for i in range(0, len(texts), batch):
        r = score(text=tf.constant(texts[i:i + batch]))
        total -= float(r["log_prob"].numpy().astype(np.float64).sum())
        count += float(r["num_chars"].numpy().sum())
    out["savedmodel"] = {"nats_per_char": total / count, "chars": count}
    for k, d in litert_dirs.items():
        rt = litert.Runtime(d)
        total = count = 0.0
        for i in range(0, len(texts), batch):
            r = loop.score(rt, texts[i:i + batch])
            total -= float(r["log_prob"].astype(np.float64).sum())
            count += float(r["num_chars"].sum())
        out[k] = {"nats_per_char": total / count, "chars": count, "bytes": dir_bytes(os.path.join(d, "model.tflite"))}
    return out


# -- one model ---------------------------------------------------------------------------------------
def bench_model(name, run_dir, args, tmp):
    from tfchargen.portable import tfjs

    quiet_log = lambda *_: None  # noqa: E731
    work = os.path.join(tmp, name)
    os.makedirs(work)
    # Throughput: the run's weights with <eos> unreachable; every export from that copy.
    fast = generate_throughput.prepare_run(types.SimpleNamespace(run_dir=run_dir, data=args.data, seed=0), work)
    dirs = {"savedmodel": export_lib.export(fast, os.path.join(work, "sm"), log=quiet_log),
            "savedmodel_xla": export_lib.export(fast, os.path.join(work, "sm_xla"), jit_compile=True, log=quiet_log),
            "litert_float": litert.export(fast, os.path.join(work, "litert"), log=quiet_log),
            "litert_int8": litert.export(fast, os.path.join(work, "litert8"), quantize="int8", log=quiet_log)}
    tfjs_dir = None
    if shutil.which("node") and os.path.isdir(os.path.join(common.REPO, "export", "js", "node_modules")):
        tfjs_dir = tfjs.export(fast, os.path.join(work, "tfjs"), log=quiet_log)
    makes = {"savedmodel": savedmodel_method(dirs["savedmodel"]),
             "savedmodel_xla": savedmodel_method(dirs["savedmodel_xla"]),
             "litert_float": litert_method(dirs["litert_float"]),
             "litert_int8": litert_method(dirs["litert_int8"])}
    sizes = {k: dir_bytes(os.path.join(d, "model.tflite") if k.startswith("litert") else d) for k, d in dirs.items()}
    if tfjs_dir:
        files = [f for f in os.listdir(tfjs_dir) if f == "model.json" or f.endswith(".bin")]
        sizes["tfjs_node"] = sizes["tfjs_node_wasm"] = sum(dir_bytes(os.path.join(tfjs_dir, f)) for f in files)
    throughput = {}
    for batch in args.batches:
        print(f"{name}: batch {batch}", flush=True)
        throughput[str(batch)] = measure(makes, tfjs_dir, batch, args.length, args.rounds)
        for method, r in throughput[str(batch)].items():
            r["model_bytes"] = sizes[method]
            print(f"  {method:15s} {r['chars_per_second']:10.0f} chars/s  x{r['vs_savedmodel']:.2f}  "
                  f"first char {r['first_char_seconds'] * 1000:.1f} ms", flush=True)
    # Agreement and nats/char: the trained weights as they are.
    trained = {"savedmodel": export_lib.export(run_dir, os.path.join(work, "t_sm"), log=quiet_log),
               "litert_float": litert.export(run_dir, os.path.join(work, "t_litert"), log=quiet_log),
               "litert_int8": litert.export(run_dir, os.path.join(work, "t_litert8"), quantize="int8",
                                            log=quiet_log)}
    if tfjs_dir:
        trained["tfjs"] = tfjs.export(run_dir, os.path.join(work, "t_tfjs"), log=quiet_log)
    titles = heldout_titles(args.data)
    prompts = [t[:args.prompt_chars] for t in titles[:args.agreement_rows]]
    litert_dirs = {k: trained[k] for k in ("litert_float", "litert_int8")}
    agree = agreement(trained["savedmodel"], litert_dirs, prompts, args.agreement_length, trained.get("tfjs"))
    print(f"{name}: agreement {json.dumps(agree)}", flush=True)
    nats = nats_per_char(trained["savedmodel"], litert_dirs, titles)
    print(f"{name}: nats/char {json.dumps(nats)}", flush=True)
    return {"run_dir": run_dir, "throughput": throughput, "agreement": agree, "heldout": nats}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teaching-run", help="a trained one-hot LSTM(128) run (default: train one briefly)")
    p.add_argument("--readme-run", help="a trained embedding 64 -> LSTM(512) run (default: train one briefly)")
    p.add_argument("--models", default="teaching,readme")
    p.add_argument("--data", default=common.DEFAULT_DATA)
    p.add_argument("--batches", default="1,64", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--length", type=int, default=200, help="new characters per row (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--agreement-rows", type=int, default=1000)
    p.add_argument("--agreement-length", type=int, default=100)
    p.add_argument("--prompt-chars", type=int, default=20, help="agreement prompts: each title's first N characters")
    p.add_argument("--out", default=common.result_path(__file__))
    args = p.parse_args(argv)
    machine = common.machine_info(probe=True)
    tmp = tempfile.mkdtemp(prefix="portable-bench-")
    try:
        results = {}
        for name in args.models.split(","):
            run_dir = getattr(args, f"{name}_run")
            if not run_dir:
                run_dir = os.path.join(tmp, f"run-{name}")
                print(f"{name}: training briefly", flush=True)
                train(name, run_dir, args.data)
            results[name] = bench_model(name, run_dir, args, tmp)
        common.write_result(args.out, {
            "benchmark": "portable_throughput",
            "config": {"prompt": PROMPT, "length": args.length, "batches": args.batches, "rounds": args.rounds,
                       "temperature": 1.0, "agreement_rows": args.agreement_rows,
                       "agreement_length": args.agreement_length, "prompt_chars": args.prompt_chars,
                       "train_flags": MODELS, "litert_threads": "interpreter default",
                       "tfjs_backends": TFJS_BACKENDS, "tfjs_agreement_backend": AGREEMENT_BACKEND},
            "results": results,
        }, machine={**machine, "loadavg_end": list(os.getloadavg()),
                    "ai_edge_litert": common._version("ai-edge-litert"),
                    "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
                    if shutil.which("node") else None})
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
