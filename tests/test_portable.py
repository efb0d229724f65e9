"""The portable export's Python half: the NumPy host loop against sampling.py (fast), and a
LiteRT export of the tiny run, made with the real CLI, against its SavedModel (slow): the
same text byte for byte for greedy and seeded rows, in the library and through `tfchargen
generate`, builtin ops only, evaluate through LiteRT, and the one-line errors."""

import json
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import HELDOUT, Background, cli_command, cli_env

from tfchargen.cli import app as cli
from tfchargen.contract import Controls
from tfchargen.data import vocab as vocab_lib
from tfchargen.generation import sampling
from tfchargen.portable import litert, loop
from tfchargen.portable import manifest as manifest_lib
from tfchargen.savedmodel.call import call


# -- fast: the loop's pieces equal sampling.py's ------------------------------------------------
def test_seeded_draw_functions_equal_sampling_py():
    rng = np.random.default_rng(0)
    seeds = np.concatenate([rng.integers(-2**63, 2**63 - 1, 2000, dtype=np.int64),
                            np.array([1, -1, 2**63 - 1, -2**63, 2**32, 2**32 - 1], np.int64)])
    key = loop.row_key(seeds)
    np.testing.assert_array_equal(key, sampling.row_key(tf.constant(seeds)).numpy())
    steps = rng.integers(0, 2048, len(seeds)).astype(np.int32)
    np.testing.assert_array_equal(loop.seeded_uniform(key, steps),
                                  sampling.seeded_uniform(tf.constant(key), tf.constant(steps)).numpy())
    for step in (0, 1, 2047):  # a scalar step, as the loop passes it
        np.testing.assert_array_equal(loop.seeded_uniform(key, step),
                                      sampling.seeded_uniform(tf.constant(key), step).numpy())


def random_log_probs(rng, rows, vocab):
    logits = (rng.normal(size=(rows, vocab)) * rng.uniform(0.5, 4, size=(rows, 1))).astype(np.float32)
    return tf.nn.log_softmax(logits).numpy()


def test_filters_and_inverse_cdf_equal_sampling_py():
    rng = np.random.default_rng(1)
    rows, vocab = 3000, 83
    lp = random_log_probs(rng, rows, vocab)
    lp[:, 0] = -np.inf  # the loop's padding column
    k = rng.integers(0, 100, rows).astype(np.int32)
    p = np.where(rng.random(rows) < 0.2, 1.0, rng.uniform(0.01, 1.0, rows)).astype(np.float32)
    want = sampling.TopK()(tf.constant(lp), {"top_k": tf.constant(k)}).numpy()
    got = loop.top_k(lp, k)
    np.testing.assert_array_equal(got, want)
    want = sampling.TopP()(tf.constant(want), {"top_p": tf.constant(p)}).numpy()
    got = loop.top_p(got, p)
    np.testing.assert_array_equal(got, want)
    temperature = rng.uniform(0.1, 2.0, rows).astype(np.float32)
    scaled = got * (np.float32(1.0) / temperature)[:, None]
    u = np.concatenate([loop.seeded_uniform(loop.row_key(rng.integers(1, 2**62, rows - 2)), 5),
                        np.array([2**-24, 1.0], np.float32)])
    np.testing.assert_array_equal(loop.inverse_cdf(scaled, u),
                                  sampling.inverse_cdf(tf.constant(scaled), tf.constant(u)).numpy())


def test_normalization_equals_vocab_py():
    space_like = manifest_lib.space_like()
    assert space_like == ["\t", "\n", "\x0b", "\x0c", "\r", "\x85", "\u2028", "\u2029"]
    v = loop.Vocab({"vocabulary": ["<pad>", "a", "<eos>"], "pad_id": 0, "eos_id": 2, "segment_separator": "\x1e",
                    "space_like": space_like, "max_prompt_chars": 4096})
    texts = [b"a\tb\nc\r\x0b\x0c", "x\u0085y\u2028z\u2029".encode(), b"bad \xff\xfe utf8 \xc3", b"\xed\xa0\x80 cut",
             "caf\u00e9 \x1e ok".encode(), b""]
    want = vocab_lib.normalize(tf.constant(texts)).numpy().tolist()
    assert [v.normalize(t).encode() for t in texts] == want


@pytest.mark.parametrize("argv,message", [
    (["export", "--run-dir", "r", "--format", "litert"], "required with --format litert: --out"),
    (["export", "--run-dir", "r", "--out", "o"], "--out: only with --format litert, tfjs or web"),
    (["export", "--run-dir", "r"], "required: --export-base"),
    (["export", "--run-dir", "r", "--format", "tfjs", "--out", "o", "--quantize", "int8"],
     "--quantize: only with --format litert"),
    (["export", "--run-dir", "r", "--format", "litert", "--out", "o", "--export-base", "b"],
     "--export-base: only with --format savedmodel"),
])
def test_export_flag_errors(capsys, argv, message):
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfchargen export: error: ") and message in lines[0], lines


def test_a_folder_without_a_model_is_one_line(capsys, tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"")  # a model file alone is no export
    for command in (["generate", "--model", tmp_path], ["evaluate", "--model", tmp_path, "--data", "csv:x"]):
        assert cli.main([str(a) for a in command]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and "holds no model versions" in lines[0] and "manifest.json" in lines[0], lines


# -- slow: a LiteRT export of the tiny run -------------------------------------------------------
# Every row of one batch, rows of every kind: greedy, seeded with and without top-k / top-p,
# different lengths (0 and 1 included); the prompts have unknown characters, U+001E, space-like
# characters, nothing at all, and more than the longest of the others.
PROMPTS = ["Today ", "Stocks rally as ", "", "World\x1eNews", "Caf\u00e9 \u2028 Zo\u00eb's", "Oil " * 40]
ROWS = [  # (max_length, temperature, top_k, top_p, seed)
    (40, 0.0, 0, 1.0, 0), (40, 0.8, 0, 1.0, 7), (40, 1.0, 5, 1.0, 8), (40, 0.7, 0, 0.9, 9),
    (40, 1.3, 3, 0.8, 10), (1, 1.0, 0, 1.0, 11), (0, 1.0, 0, 1.0, 12), (30, 0.0, 4, 0.5, 0), (40, 2.0, 0, 1.0, -5),
]


NO_TENSORFLOW = """
import sys
from tfchargen.cli import app
code = app.main(["generate", "--model", sys.argv[1], "--temperature", "0", "--max-length", "5"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(code, loaded)
"""


CLI_FLAGS = {  # name -> generate's flags, run against the SavedModel and the LiteRT export
    "plain": ["--prompt", "Today ", "--prompt", "Oil prices", "--temperature", "0.8", "--seed", "7", "--top-k", "5",
              "--num-samples", "2", "--max-length", "40"],
    "json": ["--prompt", "Stocks", "--prompt", "", "--temperatures", "0,1", "--top-p", "0.9", "--seed", "11",
             "--json", "--max-length", "50"],
}


@pytest.fixture(scope="module")
def jobs(tiny_run, tiny_model, tmp_path_factory):
    """The module's fresh processes, each started as soon as it can be: the SavedModel's
    `tfchargen generate` runs and the float LiteRT export at once, the LiteRT side's commands
    once that export exists. The int8 export is made in this process meanwhile.

    -> {"exports": {"float": DIR, "int8": DIR}, name: Background}."""
    root = tmp_path_factory.mktemp("litert")
    dirs = {"float": root / "float", "int8": root / "int8"}
    env = cli_env()
    out = {"exports": dirs}
    for name, flags in CLI_FLAGS.items():
        out[f"{name}-savedmodel"] = Background(cli_command("generate", "--model", tiny_model, *flags), env=env)
    export = Background(cli_command("export", "--run-dir", tiny_run, "--format", "litert", "--out", dirs["float"]),
                        env=env)
    litert.export(tiny_run, dirs["int8"], quantize="int8", log=lambda *_: None)
    r = export.wait()
    assert r.returncode == 0, r.stderr[-3000:]
    out["evaluate"] = Background(cli_command("evaluate", "--model", dirs["float"], "--data", HELDOUT), env=env)
    for name, flags in CLI_FLAGS.items():
        out[f"{name}-litert"] = Background(cli_command("generate", "--model", dirs["float"], *flags), env=env)
    out["no-tensorflow"] = Background([sys.executable, "-c", NO_TENSORFLOW, dirs["float"]], env=env)
    yield out
    for job in out.values():
        if isinstance(job, Background):
            job.kill()


@pytest.fixture(scope="module")
def exports(jobs):
    """{"float": DIR, "int8": DIR}: LiteRT exports of the tiny run, float made with `tfchargen
    export --format litert`, int8 with litert.export."""
    return jobs["exports"]


def savedmodel_generate(loaded, prompts, controls):
    return call(loaded, "generate", {"prompt": prompts, **controls.rows(len(prompts))})


def assert_same_rows(got, want):
    assert got["text"] == want["text"].tolist()
    assert got["continuation"] == want["continuation"].tolist()
    np.testing.assert_array_equal(got["num_chars"], want["num_chars"])
    np.testing.assert_array_equal(got["ended_with_eos"], want["ended_with_eos"])
    # The log-probs come from another runtime's kernels: equal up to float rounding.
    np.testing.assert_allclose(got["log_prob"], want["log_prob"], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_litert_export_has_builtin_ops_only(exports, tiny_run):
    for kind, d in exports.items():
        content = (d / "model.tflite").read_bytes()
        names = litert.op_names(content)
        assert names and not litert.non_builtin(names), (kind, names)
        m = manifest_lib.read(d, "litert")
        assert m["quantization"] == {"float": "none", "int8": "dynamic_int8"}[kind]
        assert m["vocabulary"] == (tiny_run / "vocab.txt").read_text(encoding="utf-8").splitlines()
        assert m["eos_id"] == len(m["vocabulary"]) - 1 and m["pad_id"] == 0
        assert m["states"] == [[m["units"]]] * 2 and m["signatures"]["step"]["inputs"] == ["ids", "state_0", "state_1"]
    assert (exports["int8"] / "model.tflite").stat().st_size < (exports["float"] / "model.tflite").stat().st_size


@pytest.mark.slow
def test_litert_generate_equals_the_savedmodel(exports, tiny_loaded):
    runtime = litert.Runtime(exports["float"])
    prompts = [p for p in PROMPTS for _ in ROWS]
    controls = Controls(**{name: [r[i] for _ in PROMPTS for r in ROWS]
                           for i, name in enumerate(("max_length", "temperature", "top_k", "top_p", "seed"))})
    got = loop.generate(runtime, prompts, controls)
    assert_same_rows(got, savedmodel_generate(tiny_loaded, prompts, controls))
    assert any(got["ended_with_eos"]) and not all(got["ended_with_eos"])
    # Batches of one kind take the SavedModel's lean loops (all greedy, all seeded unfiltered).
    for c in (Controls(max_length=60, temperature=0), Controls(max_length=60, temperature=0.9,
                                                                seed=list(range(1, len(PROMPTS) + 1)))):
        assert_same_rows(loop.generate(runtime, PROMPTS, c), savedmodel_generate(tiny_loaded, PROMPTS, c))
    # A seeded row's text is its own, whatever else is in the batch.
    one = Controls(**{k: v[3:4] for k, v in controls.rows(len(prompts)).items()})
    alone = loop.generate(runtime, prompts[3:4], one)
    assert alone["text"] == got["text"][3:4]


@pytest.mark.slow
def test_unseeded_rows_draw_fresh(exports):
    runtime = litert.Runtime(exports["float"])
    c = Controls(max_length=60, temperature=1.0, seed=0)
    assert loop.generate(runtime, ["Today "] * 2, c)["text"] != loop.generate(runtime, ["Today "] * 2, c)["text"]


@pytest.mark.slow
def test_cli_generate_prints_what_the_savedmodel_prints(jobs):
    for name in CLI_FLAGS:
        sm, lite = jobs[f"{name}-savedmodel"].wait(), jobs[f"{name}-litert"].wait()
        assert sm.returncode == 0, sm.stderr[-2000:]
        assert lite.returncode == 0 and lite.stderr == "", lite.stderr[-2000:]
        want = sm.stdout
        if name != "json":
            assert lite.stdout == want and want.strip(), (lite.stdout, want)
            continue
        got, want = ([json.loads(line) for line in out.splitlines()] for out in (lite.stdout, want))
        assert [g.pop("log_prob") for g in got] == pytest.approx([w.pop("log_prob") for w in want], rel=1e-4)
        assert got == want


@pytest.mark.slow
def test_cli_generate_on_litert_imports_no_tensorflow(jobs):
    r = jobs["no-tensorflow"].wait()
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[-1] == "0 []", r.stdout


@pytest.mark.slow
def test_evaluate_through_litert(jobs, tiny_run_heldout, exports):
    r = jobs["evaluate"].wait()
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["chars"] == tiny_run_heldout["chars"] and got["unknown_chars"] == tiny_run_heldout["unknown_chars"]
    assert got["nats_per_char"] == pytest.approx(tiny_run_heldout["nats_per_char"], abs=1e-4)
    # int8 weights score the same texts a little differently, not another model's way.
    texts = ["Stocks rally as oil prices fall", "Today in sports: a new record", "", "\x1eWorld"]
    float_, int8 = (loop.score(litert.Runtime(exports[kind]), texts) for kind in ("float", "int8"))
    np.testing.assert_array_equal(int8["num_chars"], float_["num_chars"])
    assert int8["nats_per_char"] == pytest.approx(float_["nats_per_char"], rel=0.05)


def edited_copy(src, dst, **changes):
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m.update(changes)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.mark.slow
def test_errors_are_one_line(capsys, exports, tiny_run, tmp_path):
    from tfchargen.portable import tfjs

    lite = exports["float"]
    tfjs_export = tfjs.export(tiny_run, tmp_path / "tfjs", log=lambda *_: None)
    cases = [
        (["generate", "--model", edited_copy(lite, tmp_path / "v2", format_version=2)],
         "format_version 2 is not supported"),
        (["generate", "--model", tfjs_export], "is a tfjs export: `tfchargen generate` runs SavedModels and LiteRT "
         "exports; run this one with `node export/js/generate.mjs"),
        (["evaluate", "--model", tfjs_export, "--data", HELDOUT], "is a tfjs export"),
        (["generate", "--model", lite, "--stream"], "--stream: "),
        (["generate", "--model", lite, "--version", "1"], "is a LiteRT export (one model, no versions)"),
    ]
    for argv, message in cases:
        assert cli.main([str(a) for a in argv]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"tfchargen {argv[0]}: error: ") and message in lines[0], lines
