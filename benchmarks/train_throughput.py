"""Training throughput: the teaching example vs. tfchargen, same data, same run.

    python benchmarks/train_throughput.py                      # 120 s per variant
    python benchmarks/train_throughput.py --budget-seconds 10 --out /tmp/tt.json
    python benchmarks/train_throughput.py --rounds 3 --budget-seconds 60   # medians of 3

Variants, each trained for the same wall-clock budget on CSV rows 1..6000 (titles):

    teaching      benchmarks/teaching_baseline.py: py_function one-hot batches of 8,
                  Masking + LSTM(128) + softmax Dense, categorical_crossentropy, Adam
    tfchargen_b8  tfchargen at the same config: one LSTM(128) over one-hot, batch 8,
                  examples mode (bucketed by length, padding masked and ignored)
    tfchargen_b8_windows   the same model and batch in windows mode (titles joined by
                  <eos>, cut into 128-char windows: no padding, the teaching example's
                  "num_chars" idea)
    tuned         tfchargen, same model, a throughput config: by default windows mode
                  (titles joined by <eos>, cut into 64-char windows), batch 512, lr 3e-3

tfchargen variants train their LSTM as `tfchargen train` would (--fused-lstm auto: the
fused XLA kernel, which gathers the one-hot input's projection, at both batch sizes; its
loss and optimizer). Each variant runs in a fresh
subprocess (--in-process to run them in this one).

Reported per variant: characters/second (real target characters, never padding, after
the first --warmup-steps steps so tracing is excluded), ms/step, steps done, held-out
nats/char on rows 6001..7600 (every real target, <eos> included, padding never), and the
speedup over the teaching example. This is a benchmark, not a test: numbers depend on the
machine and on whatever else it runs, so the load average is recorded with them. On a
shared VM, where the hypervisor's CPU steal comes and goes within minutes, the "clean"
figures count only the ~2 s windows in which steal stayed under 5% (pooled over --rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF's C++ start-up chatter

import common  # noqa: E402  (common and teaching_baseline sit next to this script)
import keras
import numpy as np
import teaching_baseline  # noqa: E402

from tfchargen import config  # noqa: E402
from tfchargen.data import pipeline, sources
from tfchargen.data.vocab import Vocabulary  # noqa: E402
from tfchargen.model import charrnn as model_lib  # noqa: E402
from tfchargen.training import (
    evaluate,  # noqa: E402
    )
from tfchargen.training import train as train_lib  # noqa: E402
from tfchargen.training.losses import CharCount, TokenMeanCrossentropy  # noqa: E402
from tfchargen.training.optimizers import Adam  # noqa: E402

VARIANTS = ("teaching", "tfchargen_b8", "tfchargen_b8_windows", "tuned")
# Minimum chars/s speedup over the teaching example that each variant should reach.
TARGETS = {"tfchargen_b8": 3.0, "tfchargen_b8_windows": 3.0, "tuned": 10.0}
# "Clean" rates count only windows of this many seconds whose CPU steal stayed under
# CLEAN_STEAL, and exist once MIN_CLEAN_SECONDS of such windows were seen.
CLEAN_WINDOW_SECONDS, CLEAN_STEAL, MIN_CLEAN_SECONDS = 2.0, 0.05, 10.0


# -----------------------------------------------------------------------------
# Timing: one callback measures every variant the same way.

class TargetSlots(keras.metrics.Metric):
    """All target positions, padding included (sparse [B,T] or one-hot [B,T,V] targets):
    with the real-character count it gives the share of work spent on padding."""

    def __init__(self, one_hot=False, name="slots", **kwargs):
        super().__init__(name=name, **kwargs)
        self.one_hot = one_hot
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        shape = keras.ops.shape(y_true)
        n = shape[0] * shape[1]
        self.count.assign_add(keras.ops.cast(n, "float32"))

    def result(self):
        return self.count

    def reset_state(self):
        self.count.assign(0.0)


class BudgetTimer(keras.callbacks.Callback):
    """Records (time, cumulative chars, slots) after every step; stops fit() once the
    wall-clock budget (tracing and pipeline start-up included) is spent."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.times, self.chars, self.slots, self.steps, self.ticks = [], [], [], [], []
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        # Called once per execution (steps_per_execution steps); `batch` is its last step.
        # float() waits for the step's results, so the timestamp is the step's real end.
        self.steps.append(batch + 1)
        self.chars.append(float(logs["chars"]))
        self.slots.append(float(logs["slots"]))
        self.times.append(time.perf_counter())
        self.ticks.append(cpu_ticks())
        if self.times[-1] - self.t0 >= self.seconds:
            self.model.stop_training = True

    def clean(self, first):
        """(chars, seconds) over the timed windows of >= CLEAN_WINDOW_SECONDS in which the
        hypervisor took < CLEAN_STEAL of the machine's CPU for other guests. On a shared VM a
        run's speed follows steal, and steal comes and goes within minutes, so only windows
        measured on the whole machine are compared."""
        if first is None or any(t is None for t in self.ticks):
            return 0.0, 0.0
        chars = seconds = 0.0
        start = first
        for k in range(first + 1, len(self.times)):
            if self.times[k] - self.times[start] < CLEAN_WINDOW_SECONDS and k < len(self.times) - 1:
                continue
            steal = steal_fraction(self.ticks[start], self.ticks[k])
            if steal is not None and steal < CLEAN_STEAL:
                chars += self.chars[k] - self.chars[start]
                seconds += self.times[k] - self.times[start]
            start = k
        return chars, seconds

    def summary(self, warmup):
        steps = self.steps[-1]
        # The first record at or after `warmup` steps starts the clock (none, or the last
        # one: keep all, tracing included).
        first = next((k for k, n in enumerate(self.steps) if n >= warmup), None)
        if first is not None and first < len(self.steps) - 1:
            excluded = self.steps[first]
            t_start, c_start, s_start = (x[first] for x in (self.times, self.chars, self.slots))
        else:
            excluded = 0
            t_start, c_start, s_start = self.t0, 0.0, 0.0
        seconds = self.times[-1] - t_start
        chars = self.chars[-1] - c_start
        # The second half of the budget alone: what a long run settles at, after the one-off
        # costs that warmup_steps does not catch (XLA compiles one loop per new sequence
        # bucket when a bucket first appears).
        half = next((k for k, t in enumerate(self.times) if t - self.t0 >= self.seconds / 2), None)
        steady = None
        if half is not None and half < len(self.times) - 1:
            steady = (self.chars[-1] - self.chars[half]) / (self.times[-1] - self.times[half])
        clean_chars, clean_seconds = self.clean(first if first is not None and first < len(self.steps) - 1 else None)
        return {
            "steady_chars_per_second": steady,
            "clean_chars_per_second": clean_chars / clean_seconds if clean_seconds >= MIN_CLEAN_SECONDS else None,
            "clean_chars": clean_chars,
            "clean_seconds": clean_seconds,
            "steps": steps,
            "train_seconds": self.times[-1] - self.t0,
            "warmup_steps_excluded": excluded,
            "timed_steps": steps - excluded,
            "timed_seconds": seconds,
            "timed_chars": int(chars),
            "chars_per_second": chars / seconds,
            "ms_per_step": 1000.0 * seconds / (steps - excluded),
            "padding_fraction": 1.0 - chars / max(self.slots[-1] - s_start, 1.0),
        }


def fit_for_budget(model, batches, args):
    timer = BudgetTimer(args.budget_seconds)
    # steps_per_epoch is a ceiling only: the timer ends training. The data is shuffled already.
    model.fit(batches, epochs=1, steps_per_epoch=10**9, callbacks=[timer], verbose=0, shuffle=False)
    return timer.summary(args.warmup_steps)


# -----------------------------------------------------------------------------
# The variants.

def run_teaching(train_list, heldout_list, args):
    vocab = teaching_baseline.build_vocab(train_list)
    model = teaching_baseline.build_model(len(vocab) + 1)
    teaching_baseline.compile_model(
        model, [teaching_baseline.OneHotCharCount(), TargetSlots(one_hot=True)])
    stats = fit_for_budget(model, teaching_baseline.dataset(train_list, vocab, 8, args.seed), args)
    held = teaching_baseline.heldout_nats_per_char(model, heldout_list, vocab)
    return dict(batch_size=8, mode="examples (unbucketed, py_function one-hot)", vocab_size=len(vocab) + 1,
                **stats, heldout_nats_per_char=held["nats_per_char"], heldout_chars=held["chars"])


def run_tfchargen(train_text, eval_batches, vocab, batch_size, mode, lr, args, window=None):
    fused = config.use_fused(args.fused_lstm, "lstm", batch_size, 128, one_hot=True)  # as training/train.py decides
    rnn = model_lib.build(vocab.size, cell="lstm", num_layers=1, units=128, embedding_dim=0, fused=fused)
    rnn.model.compile(  # as tfchargen/training/train.py compiles it (losses.py, optimizers.py)
        optimizer=Adam(lr, clipnorm=1.0),
        loss=TokenMeanCrossentropy(),
        metrics=[CharCount(), TargetSlots()],
        steps_per_execution=train_lib.steps_per_execution(  # as tfchargen/training/train.py sets it
            {"steps_per_execution": args.steps_per_execution}, 10**9, "default"),
    )
    batches = pipeline.training_dataset(train_text, vocab, mode=mode, batch_size=batch_size,
                                        window=window or args.window, seed=args.seed)
    stats = fit_for_budget(rnn.model, batches, args)
    held = evaluate.evaluate_dataset(rnn.model, eval_batches)
    return dict(batch_size=batch_size, mode=mode, window=window or args.window, learning_rate=lr,
                vocab_size=vocab.size, fused_lstm=fused,
                steps_per_execution=args.steps_per_execution,
                **stats, heldout_nats_per_char=held["nats_per_char"], heldout_chars=held["chars"])


# -----------------------------------------------------------------------------

def cpu_ticks():
    """(steal, total) jiffies of all CPUs from /proc/stat (Linux; None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[7] if len(fields) > 7 else 0, sum(fields[:8])


def steal_fraction(before, after):
    """Share of CPU time the hypervisor gave to other guests while a variant ran: on a
    shared VM it slows a run without any process here to see (comparisons need it low)."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=common.DEFAULT_DATA, help="AG News CSV (default: %(default)s)")
    p.add_argument("--budget-seconds", type=float, default=120.0, help="wall-clock training time per variant")
    p.add_argument("--warmup-steps", type=int, default=5, help="first steps left out of the rates (tracing)")
    p.add_argument("--train-rows", type=int, default=common.TRAIN_ROWS, help="rows 1..N train, the rest is held out")
    # windows mode: no padding at all, so a large batch is compute-bound. 512 x 64 has the
    # characters per step of 256 x 128 in half the sequential timesteps (docs/benchmarks.md).
    p.add_argument("--tuned-batch", type=int, default=512)
    p.add_argument("--tuned-window", type=int, default=64)
    p.add_argument("--tuned-mode", choices=pipeline.MODES, default="windows")
    p.add_argument("--tuned-lr", type=float, default=3e-3)
    p.add_argument("--window", type=int, default=128, help="max example length / window (tfchargen)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of %(default)s")
    p.add_argument("--fused-lstm", choices=config.FUSED_CHOICES, default="auto",
                   help="tfchargen's LSTM training kernel, as `tfchargen train --fused-lstm` (default: %(default)s)")
    p.add_argument("--steps-per-execution", type=int, default=8,
                   help="tfchargen's Keras steps_per_execution, as `tfchargen train` (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1,
                   help="run every variant this many times, alternating the order; report medians "
                        "(on a shared VM single runs drift: docs/benchmarks.md)")
    p.add_argument("--out", default=common.result_path(__file__), help="JSON results (default: %(default)s)")
    p.add_argument("--in-process", action="store_true",
                   help="run the variants in this process (default: each in a fresh subprocess)")
    p.add_argument("--variant-json", help=argparse.SUPPRESS)  # internal: one variant's result
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if not os.path.isfile(args.data):
        p.error(f"no such file: {args.data}")
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")

    # The same cleaned titles feed every variant: tfchargen's CSV reader, then Python lists
    # for the teaching example (which built its batches from Python strings).
    n = args.train_rows
    train_text = sources.load(f"csv:{args.data}[:{n}]", field="title")
    heldout_text = sources.load(f"csv:{args.data}[{n}:]", field="title")
    train_list = [t.decode("utf-8") for t in train_text.as_numpy_iterator()]
    heldout_list = [t.decode("utf-8") for t in heldout_text.as_numpy_iterator()]
    vocab_dir = tempfile.TemporaryDirectory(prefix="tt_vocab_")
    vocab = Vocabulary.build(train_list, vocab_dir.name)
    eval_batches = pipeline.eval_dataset(heldout_text, vocab)
    print(f"data: {args.data}  train titles {len(train_list)}  held-out titles {len(heldout_list)}  "
          f"vocab {vocab.size}  budget {args.budget_seconds:g}s/variant")

    def run_one(name):
        """One variant trained for the budget: a dict of its measurements."""
        if not args.in_process and not args.variant_json:
            # A fresh process per variant: threads and caches left behind by one variant's
            # pipeline (iterators, prefetch buffers) would slow the next.
            with tempfile.TemporaryDirectory() as d:
                one = os.path.join(d, "one.json")
                cmd = [sys.executable, os.path.abspath(__file__), *(argv if argv is not None else sys.argv[1:]),
                       "--variants", name, "--variant-json", one]
                probe = common.machine_probe()
                before = cpu_ticks()
                subprocess.run(cmd, check=True)
                r = json.load(open(one, encoding="utf-8"))
                r["cpu_steal_fraction"] = steal_fraction(before, cpu_ticks())
                r["machine_probe_before"] = probe
                print(f"[{name}] machine before it: {probe['matmul_gflops']:.0f} matmul GFLOP/s, "
                      f"{probe['python_million_adds_per_second']:.1f}M Python adds/s", flush=True)
                return r
        probe = None if args.variant_json else common.machine_probe()  # (a child's parent probed already)
        keras.backend.clear_session()
        keras.utils.set_random_seed(args.seed)  # same init and shuffling seed for every variant
        print(f"[{name}] training for {args.budget_seconds:g}s ...", flush=True)
        if name == "teaching":
            r = run_teaching(train_list, heldout_list, args)
        elif name == "tfchargen_b8":
            r = run_tfchargen(train_text, eval_batches, vocab, 8, "examples", 1e-3, args)
        elif name == "tfchargen_b8_windows":
            r = run_tfchargen(train_text, eval_batches, vocab, 8, "windows", 1e-3, args)
        else:
            r = run_tfchargen(train_text, eval_batches, vocab, args.tuned_batch, args.tuned_mode,
                              args.tuned_lr, args, window=args.tuned_window)
        if probe:
            r["machine_probe_before"] = probe
        print(f"[{name}] {r['steps']} steps, {r['chars_per_second']:.0f} chars/s, "
              f"{r['ms_per_step']:.1f} ms/step, held-out {r['heldout_nats_per_char']:.4f} nats/char", flush=True)
        return r

    if args.variant_json:  # the child process of run_one
        r = run_one(variants[0])
        with open(args.variant_json, "w", encoding="utf-8") as f:
            json.dump(r, f)
        return r

    machine = common.machine_info()
    rounds = []
    for k in range(args.rounds):
        # Every other round runs the variants in reverse order: on a shared VM whose speed
        # drifts, each variant then sits as often early as late, next to the teaching run
        # its ratio is taken against.
        order = variants if k % 2 == 0 else variants[::-1]
        if args.rounds > 1:
            print(f"round {k + 1}/{args.rounds}: {', '.join(order)}", flush=True)
        measured = {name: run_one(name) for name in order}
        base = measured.get("teaching")
        for r in measured.values():
            r["speedup_vs_teaching"] = r["chars_per_second"] / base["chars_per_second"] if base else None
            r["steady_speedup_vs_teaching"] = (r["steady_chars_per_second"] / base["steady_chars_per_second"]
                                               if base and base.get("steady_chars_per_second")
                                               and r.get("steady_chars_per_second") else None)
            r["ms_per_step_vs_teaching"] = r["ms_per_step"] / base["ms_per_step"] if base else None
            r["clean_speedup_vs_teaching"] = (r["clean_chars_per_second"] / base["clean_chars_per_second"]
                                              if base and base.get("clean_chars_per_second")
                                              and r.get("clean_chars_per_second") else None)
        rounds.append({name: measured[name] for name in variants})

    results = {}
    for name in variants:
        runs = [rd[name] for rd in rounds]
        if len(runs) == 1:
            r = runs[0]
        else:  # the median of each figure; the speedup is the median of the per-round ratios
            r = dict(runs[0])
            for key in ("chars_per_second", "ms_per_step", "padding_fraction", "heldout_nats_per_char",
                        "speedup_vs_teaching", "ms_per_step_vs_teaching", "cpu_steal_fraction", "steps",
                        "steady_chars_per_second", "steady_speedup_vs_teaching"):
                vals = [x[key] for x in runs if x.get(key) is not None]
                r[key] = float(np.median(vals)) if vals else None
            speedups = [x["speedup_vs_teaching"] for x in runs]
            r["speedup_range"] = ([min(speedups), max(speedups)]
                                  if runs[0]["speedup_vs_teaching"] and name != "teaching" else None)
            probes = [x["machine_probe_before"] for x in runs if x.get("machine_probe_before")]
            r["machine_probe_before"] = ({k: float(np.median([pr[k] for pr in probes])) for k in probes[0]}
                                         if probes else None)
            # Clean windows pool over rounds: each is a measurement on the whole machine.
            for key in ("clean_chars", "clean_seconds"):
                r[key] = float(sum(x.get(key) or 0.0 for x in runs))
            r["clean_chars_per_second"] = (r["clean_chars"] / r["clean_seconds"]
                                           if r["clean_seconds"] >= MIN_CLEAN_SECONDS else None)
            r["rounds"] = runs
        results[name] = r
    base = results.get("teaching")
    for name, r in results.items():
        if len(rounds) > 1:
            r["clean_speedup_vs_teaching"] = (r["clean_chars_per_second"] / base["clean_chars_per_second"]
                                              if base and base.get("clean_chars_per_second")
                                              and r.get("clean_chars_per_second") else None)
        if name in TARGETS:
            r["target_speedup"] = TARGETS[name]
            r["meets_target"] = r["speedup_vs_teaching"] is not None and r["speedup_vs_teaching"] >= TARGETS[name]
            steady = r.get("steady_speedup_vs_teaching")
            r["meets_target_steady"] = steady is not None and steady >= TARGETS[name]
            clean = r.get("clean_speedup_vs_teaching")
            r["meets_target_clean"] = None if clean is None else clean >= TARGETS[name]

    print(f"\n{'variant':<21} {'batch':>5} {'mode':<9} {'steps':>6} {'ms/step':>8} {'chars/s':>9} "
          f"{'speedup':>8} {'steady':>7} {'clean':>7} {'pad%':>5} {'held-out nats/char':>19} {'steal%':>6}  "
          f"target (all, steady, clean)")
    for name, r in results.items():
        speed = f"{r['speedup_vs_teaching']:.2f}x" if r["speedup_vs_teaching"] else "-"
        if r.get("speedup_range"):
            lo, hi = r["speedup_range"]
            target_note = f" (rounds: {lo:.2f}-{hi:.2f}x)"
        else:
            target_note = ""
        steal = "-" if r.get("cpu_steal_fraction") is None else f"{100 * r['cpu_steal_fraction']:.1f}"
        steady = f"{r['steady_speedup_vs_teaching']:.2f}x" if r.get("steady_speedup_vs_teaching") else "-"
        clean = f"{r['clean_speedup_vs_teaching']:.2f}x" if r.get("clean_speedup_vs_teaching") else "-"
        clean_met = {None: "unmeasured", True: "met", False: "MISSED"}[r.get("meets_target_clean")]
        target = "-" if name not in TARGETS else (
            f">={TARGETS[name]:g}x {'met' if r['meets_target'] else 'MISSED'}, "
            f"{'met' if r['meets_target_steady'] else 'MISSED'}, {clean_met}")
        print(f"{name:<21} {r['batch_size']:>5} {r['mode'].split()[0]:<9} {r['steps']:>6.0f} {r['ms_per_step']:>8.1f} "
              f"{r['chars_per_second']:>9.0f} {speed:>8} {steady:>7} {clean:>7} {100 * r['padding_fraction']:>5.1f} "
              f"{r['heldout_nats_per_char']:>19.4f} {steal:>6}  {target}{target_note}")

    report = {
        "benchmark": "train_throughput",
        "config": {
            "data": os.path.abspath(args.data), "field": "title",
            "train_rows": f"1-{n}", "heldout_rows": f"{n + 1}-end",
            "train_titles": len(train_list), "heldout_titles": len(heldout_list),
            "budget_seconds": args.budget_seconds, "warmup_steps": args.warmup_steps, "rounds": args.rounds,
            "model": "one-hot -> LSTM(128) -> Dense(vocab)", "seed": args.seed,
            "tuned": {"batch_size": args.tuned_batch, "mode": args.tuned_mode, "window": args.tuned_window,
                      "learning_rate": args.tuned_lr},
        },
        "definitions": {
            "chars_per_second": "real (non-padding) target characters trained per second, "
                                "after the first warmup_steps steps",
            "heldout_nats_per_char": "sum of -log p over every real target of the held-out titles "
                                     "(each character after the first, plus <eos>) / their count",
            "steady_chars_per_second": "the same over the second half of the budget only (one-off "
                                       "costs such as XLA compiling a new sequence bucket excluded)",
            "speedup": "a variant's chars/s over the teaching example's in the same round; with "
                       "--rounds > 1 every figure is the median over rounds",
            "clean_chars_per_second": f"the same over the timed windows of >= {CLEAN_WINDOW_SECONDS:g} s whose "
                                      f"CPU steal stayed under {CLEAN_STEAL:.0%} (pooled over rounds; none "
                                      f"if under {MIN_CLEAN_SECONDS:g} s of such windows): the rate on the "
                                      "whole machine; clean_speedup_vs_teaching is its ratio",
            "cpu_steal_fraction": "share of the machine's CPU time taken by the hypervisor for other "
                                  "guests while the variant's process ran (/proc/stat steal)",
            "machine_probe_before": "measured just before the variant's process started: dense "
                                    "matmul GFLOP/s at a fixed [256, 212] x [212, 512] shape and a Python loop's "
                                    "million additions per second (medians of 5 short trials); "
                                    "a ratio between variants whose probes differ compares "
                                    "different machines",
        },
        "targets": {k: {"min_speedup_vs_teaching": v,
                        "meets_target": results[k]["meets_target"] if k in results else None,
                        "meets_target_steady": results[k]["meets_target_steady"] if k in results else None,
                        "meets_target_clean": results[k]["meets_target_clean"] if k in results else None}
                    for k, v in TARGETS.items()},
        "variants": results,
    }
    machine["loadavg_after"] = os.getloadavg()
    report = common.write_result(args.out, report, machine=machine)
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
