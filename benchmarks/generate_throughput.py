"""Generation throughput: tfchargen's in-graph loop vs. the slow ways, and the matmul ceiling.

    python benchmarks/generate_throughput.py                          # batches 1..4096
    python benchmarks/generate_throughput.py --batches 1,64 --repeats 1 --out /tmp/gt.json
    python benchmarks/generate_throughput.py --run-dir A              # a trained run

Methods, each generating --length new characters per row from the prompt "Today ", with
temperature 1 and <eos> made unreachable, so every row runs the full length:

    generator           tfchargen.generation.generator.Generator, in memory, no XLA, called through the
                        export's `generate` tf.function (string ops in-graph too)
    generator_xla       the same with jit_compile=True (the numeric loop under XLA)
    generator_seeded,   generator and generator_xla with seeded rows (seed = row number):
    generator_xla_seeded  the per-row counter-based draw instead of the unseeded kernel
    savedmodel          tf.saved_model.load(export).signatures["generate"], exported without XLA
    savedmodel_xla      the same, exported with jit_compile=True
    onestep_tutorial    the TF tutorial's "OneStep", as the tutorial writes it: a Python loop
                        calling a one-step tf.function once per character, strings in and
                        out (unicode_split, table lookup, the Keras model over the new
                        characters with carried states, categorical, ids -> chars), then
                        tf.strings.join; the 30x target is stated against this one
    onestep_loop        a leaner one-step loop than the tutorial's: ids in and out, the RNN
                        cells called directly (rnn.step), no string ops per step; reported
                        beside it as the stronger baseline
    teaching_quadratic  the teaching example: per new character, re-run the whole Keras model
                        eagerly over the whole prefix and sample the last position (O(n^2));
                        only at --teaching-batches and --teaching-length characters

    matmul_ceiling      not a generator: an XLA loop of the LSTM step's matmul
                        [B, in+units] @ [in+units, gates*units], `length` times; its GFLOP/s
                        bounds chars/s at FLOPs/char = sum over layers 2*(in+units)*gates*units
                        + 2*units*vocab (the output layer)

Reported per (method, batch): chars/s (new characters / steady-state seconds per call),
first-call latency (a fresh Generator / a freshly loaded SavedModel / a fresh tf.function,
so it includes tracing and XLA compilation; SavedModel load time is reported apart), the
median of --repeats steady-state calls, and chars/s as a fraction of the matmul ceiling.
This is a benchmark, not a test: the numbers depend on the machine and on whatever else
runs on it, so the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF's C++ start-up chatter

import common  # noqa: E402  (next to this script)
import keras
import tensorflow as tf

from tfchargen import config  # noqa: E402
from tfchargen.data import sources  # noqa: E402
from tfchargen.data.vocab import Vocabulary  # noqa: E402
from tfchargen.generation import generator as gen_lib  # noqa: E402
from tfchargen.model import charrnn as model_lib  # noqa: E402
from tfchargen.savedmodel import export as export_lib  # noqa: E402
from tfchargen.training import rundir  # noqa: E402

PROMPT = "Today "
METHODS = ("generator", "generator_seeded", "generator_xla", "generator_xla_seeded", "savedmodel", "savedmodel_xla",
           "minimal_plain", "minimal_xla", "onestep_tutorial", "onestep_loop",
           "teaching_quadratic")
TFCHARGEN_METHODS = ("generator", "generator_seeded", "generator_xla", "generator_xla_seeded", "savedmodel",
                     "savedmodel_xla")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# Targets, stated for the default model (one-hot LSTM(128)); best tfchargen method counts.
TARGET_B1_CHARS_PER_S = 30_000
TARGET_B1_VS_ONESTEP = 30.0
TARGET_B4096_CHARS_PER_S = 300_000
# Output bias of <eos>: low enough that exp() underflows to exactly 0 at any temperature we use.
EOS_BIAS = -1e9


# -----------------------------------------------------------------------------
# The model: a run dir whose <eos> can never be sampled.

def build_untrained_run(run_dir: str, data: str, seed: int) -> None:
    """config.json + vocab.txt (AG News titles, rows 1..6000) + untrained default weights.

    Untrained weights generate as fast as trained ones; building directly skips fit() and
    its callbacks (TensorBoard, checkpoints), which the benchmark has no use for.
    """
    cfg = {**config.DEFAULTS, "train_data": f"csv:{data}[:{common.TRAIN_ROWS}]", "field": "title"}
    rundir.prepare_run_dir(cfg, run_dir)
    titles = sources.load(cfg["train_data"], field="title")
    vocab = Vocabulary.build(titles.as_numpy_iterator(), run_dir)
    keras.utils.set_random_seed(seed)
    rnn = model_lib.from_config(cfg, vocab.size)
    rnn.model.save_weights(rundir.path(run_dir, rundir.FINAL_WEIGHTS))


def prepare_run(args, tmp: str) -> str:
    """A run dir under ``tmp`` holding the benchmarked weights with <eos> suppressed.

    Every row must run the full --length, or chars/s would depend on where sampling happens
    to draw <eos>. So the output layer's bias for <eos> is set to EOS_BIAS before anything
    is built or exported from these weights: its probability is exactly 0, every method
    (in memory, SavedModel, baselines) sees the same weights, and the user's run is untouched.
    """
    run_dir = os.path.join(tmp, "run")
    if args.run_dir:
        os.makedirs(run_dir)
        for name in (rundir.CONFIG, rundir.VOCAB):
            shutil.copy(rundir.path(args.run_dir, name), run_dir)
        _, _, rnn = rundir.load_trained(args.run_dir, use_cudnn=False)
    else:
        build_untrained_run(run_dir, args.data, args.seed)
        _, _, rnn = rundir.load_trained(run_dir, use_cudnn=False)
    vocab = rundir.load_vocab(run_dir)
    bias = rnn.head.bias.numpy()
    bias[vocab.eos_id] = EOS_BIAS
    rnn.head.bias.assign(bias)
    rnn.model.save_weights(rundir.path(run_dir, rundir.FINAL_WEIGHTS))
    return run_dir


def flops_per_char(cfg: dict, vocab_size: int) -> tuple[int, int, int]:
    """(FLOPs per generated character, first layer's matmul K = in+units, its N = gates*units).

    Each layer's step is [in+units] @ [in+units, gates*units] (input and recurrent kernels;
    one-hot input counts as a dense vocab-wide matmul, which is what Keras runs), then the
    output layer [units] @ [units, vocab]. Elementwise gate math and sampling are left out.
    """
    units, gates = cfg["units"], GATES[cfg["cell"]]
    first_in = cfg["embedding_dim"] or vocab_size
    total = 0
    for i in range(cfg["layers"]):
        total += 2 * ((first_in if i == 0 else units) + units) * gates * units
    total += 2 * units * vocab_size
    return total, first_in + units, gates * units


# -----------------------------------------------------------------------------
# The methods. Each factory takes the batch size and returns (call, info): call() runs one
# whole generation and returns the number of new characters it produced, as a Python int
# (which also waits for the result).

def controls(batch: int, length: int, seeded: bool = False) -> dict:
    return dict(
        prompt=tf.constant([PROMPT] * batch),
        max_length=tf.fill([batch], tf.constant(length, tf.int32)),
        temperature=tf.ones([batch], tf.float32),  # sampled, never greedy
        top_k=tf.zeros([batch], tf.int32),  # off
        top_p=tf.ones([batch], tf.float32),  # off
        # unseeded (serving's default): the entropy-seeded kernel; seeded: one seed per row
        seed=tf.range(1, batch + 1, dtype=tf.int64) if seeded else tf.zeros([batch], tf.int64),
    )


def generator_factory(rnn, vocab, jit_compile, length, seeded=False):
    def make(batch):
        g = gen_lib.Generator(rnn, vocab, jit_compile=jit_compile)
        fn = export_lib.signature_functions(g)["generate"]
        inputs = controls(batch, length, seeded)
        return (lambda: int(tf.reduce_sum(fn(**inputs)["num_chars"]))), {}
    return make


def savedmodel_factory(path, length):
    def make(batch):
        t0 = time.perf_counter()
        sig = tf.saved_model.load(path).signatures["generate"]
        load_seconds = time.perf_counter() - t0
        inputs = controls(batch, length)
        return (lambda: int(tf.reduce_sum(sig(**inputs)["num_chars"]))), {"load_seconds": load_seconds}
    return make


def prompt_ids(vocab, batch):
    return vocab.encode(tf.constant([PROMPT] * batch)).to_tensor()  # [B, T], all rows alike


def onestep_tutorial_factory(rnn, vocab, length):
    """The TF text-generation tutorial's OneStep, line for line, on our model and tables:
    strings in, strings out, one tf.function call per character, joined at the end."""
    def make(batch):
        # The tutorial masks [UNK]; our model's never-valid id is padding (0).
        prediction_mask = tf.one_hot(0, vocab.size, on_value=float("-inf"), off_value=0.0)

        @tf.function
        def generate_one_step(inputs, states):
            input_chars = tf.strings.unicode_split(inputs, "UTF-8")
            input_ids = tf.ragged.map_flat_values(vocab.char_to_id.lookup, input_chars).to_tensor()
            out = rnn.stepper([tf.cast(input_ids, tf.int32), *states], training=False)
            predicted_logits = out[0][:, -1, :] / 1.0 + prediction_mask  # temperature 1
            predicted_ids = tf.squeeze(tf.random.categorical(predicted_logits, num_samples=1), axis=-1)
            return vocab.id_to_char.lookup(predicted_ids), out[1:]

        def call():
            states, next_char = rnn.zero_states(batch), tf.constant([PROMPT] * batch)
            result = []
            for _ in range(length):
                next_char, states = generate_one_step(next_char, states)
                result.append(next_char)
            text = tf.strings.join(result)
            return int(tf.reduce_sum(tf.strings.length(text, unit="UTF8_CHAR")))
        return call, {}
    return make


def onestep_factory(rnn, vocab, length):
    """A leaner one-step loop: ids in and out, the cells called directly, one call per character."""
    def make(batch):
        @tf.function
        def one_step(ids, states):
            logits, states = rnn.step(ids, states)
            # Temperature 1; padding (id 0) is never sampled, as in Generator.
            nxt = tf.random.categorical(logits[:, 1:], 1, dtype=tf.int32)[:, 0] + 1
            return nxt, states

        prompt = prompt_ids(vocab, batch)

        def call():
            states = rnn.zero_states(batch)
            for t in range(prompt.shape[1]):  # the prompt, one character per call
                nxt, states = one_step(prompt[:, t], states)
            new = [nxt]  # sampled after the prompt's last character
            for _ in range(length - 1):
                nxt, states = one_step(nxt, states)
                new.append(nxt)
            text = vocab.decode(tf.stack(new, axis=1))  # ids -> strings, like Generator
            return int(tf.reduce_sum(tf.strings.length(text, unit="UTF8_CHAR")))
        return call, {}
    return make


def minimal_factory(rnn, vocab, length, jit_compile):
    """The floor: the least a generation loop of this model does. One tf.while_loop over
    the cells (the first layer's input projection gathered, as Generator does), the dense
    head, log_softmax and tf.random.categorical, from the prompt's state; no controls, no
    per-row stopping, no strings. Generator's loop is reported as a fraction of it."""
    def make(batch):
        table = rnn.input_table()

        @tf.function(jit_compile=jit_compile, autograph=False)
        def run(first, states):
            out = tf.TensorArray(tf.int32, size=length)

            def body(i, ids, states, out):
                logits, states = rnn.step(ids, states, table)
                nxt = tf.random.categorical(tf.nn.log_softmax(logits), 1, dtype=tf.int32)[:, 0]
                return i + 1, nxt, states, out.write(i, nxt)

            _, _, _, out = tf.while_loop(lambda i, *_: i < length, body, (tf.constant(0), first, states, out))
            return tf.transpose(out.stack())

        prompt = prompt_ids(vocab, batch)
        states = rnn.stepper([prompt[:, :-1], *rnn.zero_states(batch)], training=False)[1:]
        first = prompt[:, -1]

        def call():
            return int(tf.size(run(first, list(states))))
        return call, {}
    return make


def teaching_factory(rnn, vocab, length):
    """The teaching example's way: the whole prefix through the whole model per character."""
    def make(batch):
        prompt = prompt_ids(vocab, batch)

        def call():
            ids = prompt
            for _ in range(length):
                logits = rnn.model(ids, training=False)[:, -1, 1:]  # eager Keras call, [B, V-1]
                nxt = tf.random.categorical(logits, 1, dtype=tf.int32) + 1  # never padding
                ids = tf.concat([ids, nxt], axis=1)
            text = vocab.decode(ids[:, prompt.shape[1]:])
            return int(tf.reduce_sum(tf.strings.length(text, unit="UTF8_CHAR")))
        return call, {}
    return make


def ceiling_factory(k, n, units, steps, flops_char):
    """XLA while-loop of [B, k] @ [k, n], `steps` times. Like an RNN, each step's output
    feeds the next input's `units` recurrent columns, so XLA cannot hoist the matmul."""
    def make(batch):
        w = tf.random.normal([k, n], stddev=k ** -0.5, seed=1)
        x0 = tf.random.normal([batch, k], seed=2)

        @tf.function(jit_compile=True)
        def run(x, w):
            def body(i, x):
                h = tf.tanh(tf.matmul(x, w)[:, :units])
                return i + 1, tf.concat([x[:, :k - units], h], axis=1)
            return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x))[1]

        def call():
            run(x0, w).numpy()
            return batch * steps  # "characters" whose LSTM matmul was done
        return call, {"matmul_flops_per_char": 2 * k * n, "flops_per_char": flops_char}
    return make


# -----------------------------------------------------------------------------
# Timing.

def measure(makes: dict, batch, repeats):
    """Every method of one batch in alternating rounds, so that the machine's drifting load
    falls on all of them alike: each method's first call (fresh object: tracing and
    compilation included), then ``repeats`` rounds in which each method runs for at least
    0.2 s (fast calls need many samples); the median per call over all rounds."""
    calls, out = {}, {}
    for name, make in makes.items():
        calls[name], info = make(batch)
        t0 = time.perf_counter()
        chars = calls[name]()
        out[name] = {"batch": batch, "chars_per_call": chars, "first_call_seconds": time.perf_counter() - t0,
                     "steady_seconds_all": [], **info}
    for _ in range(repeats):
        for name, call in calls.items():
            times = out[name]["steady_seconds_all"]
            spent = 0.0
            while spent < 0.2 or not times:
                t0 = time.perf_counter()
                out[name]["chars_per_call"] = call()
                times.append(time.perf_counter() - t0)
                spent += times[-1]
    for r in out.values():
        r["steady_seconds_per_call"] = statistics.median(r["steady_seconds_all"])
        r["chars_per_second"] = r["chars_per_call"] / r["steady_seconds_per_call"]
    return out


def plot(report, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for method, rows in report["results"].items():
        bs = sorted(int(b) for b in rows)
        ax.plot(bs, [rows[str(b)]["chars_per_second"] for b in bs], marker="o", label=method)
    ceil = report["matmul_ceiling"]
    if ceil:
        bs = sorted(int(b) for b in ceil)
        ax.plot(bs, [ceil[str(b)]["chars_per_second_bound"] for b in bs], "k--", marker=".",
                label="matmul ceiling (bound)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (rows)")
    ax.set_ylabel("new characters / second")
    m = report["machine"]
    ax.set_title(f"generation throughput, {report['config']['length']} chars/row "
                 f"({m['cpu_count']} CPUs, load {m['loadavg'][0]:.1f}, TF {m['tensorflow']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def call_cost(path, repeats):
    """Median seconds of one generate call on the export at batch 1, max_length 0 and 1."""
    sig = tf.saved_model.load(path).signatures["generate"]
    out = {}
    for n in (0, 1):
        inputs = controls(1, n)
        sig(**inputs)
        times = []
        while len(times) < max(50, repeats) or sum(times) < 1.0:
            t0 = time.perf_counter()
            sig(**inputs)["num_chars"].numpy()
            times.append(time.perf_counter() - t0)
        out[f"max_length_{n}_s"] = statistics.median(times)
    return out


TARGET_OF_MINIMAL = {"savedmodel": ("minimal_plain", 0.6), "savedmodel_xla": ("minimal_xla", 0.85)}


def of_minimal(results):
    """Each export's chars/s as a fraction of the minimal loop's, per batch measured."""
    report = {}
    for export, (floor, target) in TARGET_OF_MINIMAL.items():
        rows = {b: r["chars_per_second"] / results[floor][b]["chars_per_second"]
                for b, r in results.get(export, {}).items() if b in results.get(floor, {})}
        report[export] = {"vs": floor, "by_batch": rows, "target_batch1": target,
                          "met": None if "1" not in rows else rows["1"] >= target}
    return report


def parse_ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", help="a trained run to benchmark (default: an untrained LSTM(128))")
    p.add_argument("--data", default=common.DEFAULT_DATA, help="AG News CSV for the untrained model's vocabulary")
    p.add_argument("--batches", default="1,8,64,512,4096", help="batch sizes (default: %(default)s)")
    p.add_argument("--length", type=int, default=200, help="new characters per row (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="steady-state calls per (method, batch); median")
    p.add_argument("--teaching-batches", default="1,8", help="batches for the quadratic baseline, "
                   "if also in --batches (default: %(default)s)")
    p.add_argument("--teaching-length", type=int, default=50, help="new characters per row, quadratic baseline")
    p.add_argument("--methods", default=",".join(METHODS), help="subset of %(default)s")
    p.add_argument("--no-ceiling", action="store_true", help="skip the matmul ceiling")
    p.add_argument("--compare-exports", default="", metavar="NAME=PATH,...",
                   help="other exports of the same weights (e.g. made by another commit), measured as methods "
                        "NAME beside the others; with --run-dir, whose <eos> bias must already be very low")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=common.result_path(__file__), help="JSON results (default: %(default)s)")
    p.add_argument("--plot", help="PNG plot (default: --out with .png)")
    args = p.parse_args(argv)
    batches = parse_ints(args.batches)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    compared = dict(item.split("=", 1) for item in args.compare_exports.split(",") if "=" in item)
    if set(methods) - set(METHODS):
        p.error(f"unknown methods {sorted(set(methods) - set(METHODS))}; choose from {', '.join(METHODS)}")
    if not 1 <= args.length <= gen_lib.MAX_NEW_CHARS or args.repeats < 1:
        p.error(f"--length must be in 1..{gen_lib.MAX_NEW_CHARS} and --repeats >= 1")
    if not args.run_dir and not os.path.isfile(args.data):
        p.error(f"no such file: {args.data}")
    plot_path = args.plot or os.path.splitext(args.out)[0] + ".png"

    tmp = tempfile.mkdtemp(prefix="gen_tp_")
    try:
        run_dir = prepare_run(args, tmp)
        cfg, vocab, rnn = rundir.load_trained(run_dir, use_cudnn=False)
        fpc, k, n = flops_per_char(cfg, vocab.size)
        model_desc = (f"{cfg['layers']}x {cfg['cell'].upper()}({cfg['units']}), "
                      f"{'embedding ' + str(cfg['embedding_dim']) if cfg['embedding_dim'] else 'one-hot'}, "
                      f"vocab {vocab.size}")
        is_default = (cfg["cell"], cfg["layers"], cfg["units"], cfg["embedding_dim"]) == ("lstm", 1, 128, 0)
        print(f"model: {model_desc} ({'untrained' if not args.run_dir else args.run_dir}); "
              f"{fpc} FLOPs/char; batches {batches}; {args.length} chars/row", flush=True)

        exports = {}  # an export (with its session-loader check) is part of setup, not of timing
        for name, jit in (("savedmodel", False), ("savedmodel_xla", True)):
            if name in methods:
                t0 = time.perf_counter()
                path = export_lib.export(run_dir, os.path.join(tmp, name), jit_compile=jit, log=lambda _: None)
                exports[name] = {"path": path, "export_seconds": time.perf_counter() - t0}
                print(f"[{name}] exported in {exports[name]['export_seconds']:.1f}s", flush=True)

        factories = {
            "generator": generator_factory(rnn, vocab, False, args.length),
            "generator_xla": generator_factory(rnn, vocab, True, args.length),
            "generator_seeded": generator_factory(rnn, vocab, False, args.length, seeded=True),
            "generator_xla_seeded": generator_factory(rnn, vocab, True, args.length, seeded=True),
            "minimal_plain": minimal_factory(rnn, vocab, args.length, jit_compile=False),
            "minimal_xla": minimal_factory(rnn, vocab, args.length, jit_compile=True),
            "onestep_tutorial": onestep_tutorial_factory(rnn, vocab, args.length),
            "onestep_loop": onestep_factory(rnn, vocab, args.length),
            "teaching_quadratic": teaching_factory(rnn, vocab, args.teaching_length),
            **{m: savedmodel_factory(e["path"], args.length) for m, e in exports.items()},
            **{m: savedmodel_factory(path, args.length) for m, path in compared.items()},
        }
        methods += [m for m in compared if m not in methods]
        teaching_batches = set(parse_ints(args.teaching_batches))
        ceiling_make = ceiling_factory(k, n, cfg["units"], args.length, fpc)

        machine = {**common.machine_info(probe=True),
                   "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                   "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}
        results = {m: {} for m in methods}
        ceiling = {}
        # At each batch the methods run in alternating rounds (measure), so drifting
        # background load hurts the methods of one batch alike.
        for batch in batches:
            makes = {m: factories[m] for m in methods
                     if m != "teaching_quadratic" or batch in teaching_batches}
            if not args.no_ceiling:
                makes["matmul_ceiling"] = ceiling_make
            measured = measure(makes, batch, args.repeats)
            for m, r in measured.items():
                if m == "matmul_ceiling":
                    continue
                r["new_chars_per_row"] = args.teaching_length if m == "teaching_quadratic" else args.length
                if r["chars_per_call"] != batch * r["new_chars_per_row"]:
                    print(f"  warning: {m} made {r['chars_per_call']} chars, expected "
                          f"{batch * r['new_chars_per_row']} (rows stopped early?)")
                results[m][str(batch)] = r
                print(f"[{m}] batch {batch}: {r['chars_per_second']:,.0f} chars/s, first call "
                      f"{r['first_call_seconds']:.2f}s, steady {r['steady_seconds_per_call']:.3f}s/call",
                      flush=True)
            if not args.no_ceiling:
                r = measured["matmul_ceiling"]
                # Its "characters" are only matmul rows, not a rate to compare: rename them.
                r["matmul_rows_per_call"] = r.pop("chars_per_call")
                r["matmul_rows_per_second"] = r.pop("chars_per_second")
                r["gflops"] = r["matmul_rows_per_second"] * r["matmul_flops_per_char"] / 1e9
                r["chars_per_second_bound"] = r["gflops"] * 1e9 / fpc
                ceiling[str(batch)] = r
                print(f"[matmul_ceiling] batch {batch}: {r['gflops']:.1f} GFLOP/s -> "
                      f"<= {r['chars_per_second_bound']:,.0f} chars/s", flush=True)
        fixed_cost = {m: call_cost(e["path"], args.repeats) for m, e in exports.items()}
        for m, c in fixed_cost.items():
            print(f"[{m}] batch 1 call: {1e3 * c['max_length_0_s']:.2f} ms at max_length 0, "
                  f"{1e3 * c['max_length_1_s']:.2f} ms at 1", flush=True)
        machine["loadavg_after"] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for rows in results.values():
        for b, r in rows.items():
            bound = ceiling[b]["chars_per_second_bound"] if b in ceiling else None
            r["fraction_of_ceiling"] = r["chars_per_second"] / bound if bound else None

    def best_tfchargen(batch):
        rows = [(results[m][str(batch)]["chars_per_second"], m) for m in TFCHARGEN_METHODS
                if str(batch) in results.get(m, {})]
        return max(rows) if rows else (None, None)

    b1, b1_method = best_tfchargen(1)
    onestep_b1 = results.get("onestep_tutorial", {}).get("1", {}).get("chars_per_second")
    lean_b1 = results.get("onestep_loop", {}).get("1", {}).get("chars_per_second")
    b4096, b4096_method = best_tfchargen(4096)
    targets = {
        "applies_to": "the default one-hot LSTM(128); best tfchargen method at that batch",
        "model_is_default": is_default,
        "batch1_chars_per_s": {"target": TARGET_B1_CHARS_PER_S, "value": b1, "method": b1_method,
                               "met": None if b1 is None else b1 >= TARGET_B1_CHARS_PER_S},
        "batch1_vs_onestep": {"target": TARGET_B1_VS_ONESTEP,
                              "value": b1 / onestep_b1 if b1 and onestep_b1 else None, "method": b1_method,
                              "met": b1 / onestep_b1 >= TARGET_B1_VS_ONESTEP if b1 and onestep_b1 else None,
                              "baseline": "onestep_tutorial",
                              "vs_onestep_loop": b1 / lean_b1 if b1 and lean_b1 else None},
        "batch4096_chars_per_s": {"target": TARGET_B4096_CHARS_PER_S, "value": b4096, "method": b4096_method,
                                  "met": None if b4096 is None else b4096 >= TARGET_B4096_CHARS_PER_S},
    }

    print(f"\n{'method':<19} {'batch':>5} {'chars/s':>11} {'first s':>8} {'steady s':>9} {'of ceiling':>10}")
    for m, rows in results.items():
        for b, r in rows.items():
            frac = f"{100 * r['fraction_of_ceiling']:.1f}%" if r["fraction_of_ceiling"] is not None else "-"
            print(f"{m:<19} {b:>5} {r['chars_per_second']:>11,.0f} {r['first_call_seconds']:>8.2f} "
                  f"{r['steady_seconds_per_call']:>9.3f} {frac:>10}")
    for name, t in targets.items():
        if isinstance(t, dict):
            v = "n/a" if t["value"] is None else f"{t['value']:,.1f}"
            verdict = "-" if t["met"] is None else "met" if t["met"] else "MISSED"
            print(f"target {name}: {v} (>= {t['target']:,}) {verdict}")

    targets["of_minimal_loop"] = of_minimal(results)
    report = {
        "benchmark": "generate_throughput",
        "config": {
            "model": model_desc, "run_dir": os.path.abspath(args.run_dir) if args.run_dir else None,
            "trained": bool(args.run_dir), "prompt": PROMPT, "length": args.length,
            "teaching_length": args.teaching_length, "batches": batches, "repeats": args.repeats,
            "temperature": 1.0, "top_k": 0, "top_p": 1.0,
            "seed": "0 (unseeded), except *_seeded methods: row number 1..B",
            "eos": f"output bias of <eos> set to {EOS_BIAS:g}: never sampled, every row runs full length",
            "flops_per_char": fpc, "ceiling_matmul": f"[B, {k}] @ [{k}, {n}]",
        },
        "definitions": {
            "chars_per_second": "new characters per call / median steady-state seconds per call",
            "first_call_seconds": "first call on a fresh Generator, freshly loaded SavedModel or fresh "
                                  "tf.function: includes tracing and XLA compilation (not SavedModel loading)",
            "fraction_of_ceiling": "chars_per_second / matmul_ceiling chars_per_second_bound at that batch",
            "of_minimal_loop": "an export's chars/s / the minimal loop's (minimal_factory) at that batch, "
                               "plain and XLA alike; targets: plain >= 0.6, XLA >= 0.85 at batch 1",
            "call_cost_batch1_seconds": "median seconds of one generate call at batch 1 with max_length 0 "
                                        "and 1: the work around the loop",
            "teaching_quadratic": "measured at teaching_length characters per row: being O(n^2), "
                                  "its chars/s at length would be lower still",
        },
        "exports": {m: {"export_seconds": e["export_seconds"]} for m, e in exports.items()},
        "targets": targets,
        "call_cost_batch1_seconds": fixed_cost,
        "results": results,
        "matmul_ceiling": ceiling,
    }
    report = common.write_result(args.out, report, machine=machine)
    print(f"\nwrote {args.out}")
    if plot(report, plot_path):
        print(f"wrote {plot_path}")
    return report


if __name__ == "__main__":
    main()
