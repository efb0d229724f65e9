"""Training through the real CLI in fresh processes: learning, metrics, resume, evaluate."""

import collections
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from helpers import DATA, HELDOUT, ROOT, TRAIN, Concurrent, run_cli, run_clis

from tfchargen import config
from tfchargen.data import sources
from tfchargen.data.vocab import normalize_py


def unigram_entropy(texts):
    """Entropy (nats) of the training targets' unigram distribution: characters and <eos>."""
    counts = collections.Counter()
    for t in texts:
        counts.update(normalize_py(t)[1:])
        counts["<eos>"] += 1
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


# The fresh-process parts of this module's tests, started together in threads at its first
# slow test (those on the tiny run once it is trained); each test takes its part's result.
ERRORS = [
    (["--train-data", "csv:/no/such.csv"], "no such file"),
    (["--train-data", "tfds:ag_news_subset/train", "--tfds-data-dir", "/tmp/tfchargen-empty-tfds"], "csv:PATH"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_path):
    tmp = tmp_path_factory.mktemp("train")
    started = Concurrent()
    started.start("killed", _killed_run_resumes, tmp / "resume")
    started.start("output", _plain_output_runs, tmp / "out")
    started.start("never trained", _never_trained_run, tmp / "typo")
    started.start("same seed", _same_seed_runs, tmp / "same-seed")
    for i, (extra, _) in enumerate(ERRORS):
        started.start(f"error {i}", run_cli, "train", "--run-dir", tmp / f"error{i}-x", *extra, timeout=120)
    started.start("help", lambda: [run_cli(*sub, "--help") for sub in ([], ["train"], ["evaluate"])])
    yield started
    started.close()


@pytest.fixture(scope="module")
def runs_on_tiny_run(tiny_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train-tiny")
    started = Concurrent()
    started.start("other architecture", run_cli, "train", "--run-dir", tiny_run, "--train-data", TRAIN,
                  "--units", 64, timeout=120)
    started.start("init from", run_clis,
                  ["train", "--preset", "tiny", "--run-dir", tmp / "fine", "--init-from", tiny_run, "--train-data",
                   TRAIN, "--field", "description", "--learning-rate", 0, "--epochs", 1, "--steps-per-epoch", 3,
                   "--sample-every", 0, "--no-export"],
                  ["train", "--preset", "tiny", "--run-dir", tmp / "other", "--init-from", tiny_run, "--train-data",
                   TRAIN, "--units", 24, "--no-export"])
    yield started, tmp
    started.close()


@pytest.mark.slow
def test_short_run_beats_unigram_entropy(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["chars_per_second"] > 0 and m["train_chars"] > 0 and math.isfinite(m["train_loss"])
        assert m["eval_bits_per_char"] == pytest.approx(m["eval_nats_per_char"] / math.log(2))
    train_texts = [t.decode() for t in sources.load(TRAIN).as_numpy_iterator()]
    h = unigram_entropy(train_texts)
    assert metrics[-1]["eval_nats_per_char"] < h - 0.1, (metrics[-1], h)
    files = set(os.listdir(tiny_run))
    assert {"config.json", "vocab.txt", "metrics.json", "model.weights.h5", "checkpoints", "logs", "backup"} <= files
    assert sorted(os.listdir(tiny_run / "checkpoints")) == ["epoch-001.weights.h5", "epoch-002.weights.h5"]
    assert any(f.startswith("events") for _, _, fs in os.walk(tiny_run / "logs" / "eval") for f in fs)


@pytest.mark.slow
def test_evaluate_agrees_with_training_metrics(tiny_run, tiny_run_heldout):
    out = tiny_run_heldout  # `tfchargen evaluate --run-dir` in a fresh process
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert out["nats_per_char"] == pytest.approx(metrics[-1]["eval_nats_per_char"], rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(out["nats_per_char"]))
    # Every known character of each held-out title is one target (n-1 chars + <eos>).
    import tensorflow as tf

    from tfchargen.data.vocab import Vocabulary
    vocab = Vocabulary(str(tiny_run / "vocab.txt"))
    held = [t for t in sources.load(HELDOUT).as_numpy_iterator()]
    lengths = vocab.encode(tf.constant(held)).row_lengths().numpy()
    assert out["chars"] == int(lengths.sum())
    assert out["unknown_chars"] == int(vocab.count_unknown(tf.constant(held)).numpy().sum())


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(runs):
    runs.result("killed")


def _killed_run_resumes(run_dir):
    args = [sys.executable, "-m", "tfchargen", "train", "--run-dir", str(run_dir), "--train-data", TRAIN,
            "--units", "16", "--batch-size", "16", "--steps-per-epoch", "300", "--epochs", "3",
            "--sample-every", "0", "--seed", "5", "--no-export"]  # what is checked is the run dir
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def epochs_written():  # metrics.json is replaced atomically: absent or whole
        try:
            return json.loads((run_dir / "metrics.json").read_text())
        except FileNotFoundError:
            return []

    # Kill as soon as epoch 1 is on disk: on a fast machine an epoch of 40 steps took 0.07 s,
    # so a fixed wait let the run finish before the kill (hence 300 steps and no sleep).
    deadline = time.monotonic() + 300
    while not (epochs_written() and (run_dir / "checkpoints" / "epoch-001.weights.h5").exists()):
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads((run_dir / "metrics.json").read_text())
    assert done and done[-1]["epoch"] < 3
    r = run_cli(*args[3:])  # the same command again
    assert r.returncode == 0, r.stderr[-2000:]
    first_resumed = done[-1]["epoch"] + 1
    assert f"Epoch {first_resumed}/3" in r.stdout and "Epoch 1/3" not in r.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[:len(done)] == done  # earlier epochs kept, not rewritten
    # A finished run re-run with the same command trains nothing more.
    r = run_cli(*args[3:])
    assert r.returncode == 0 and "Epoch" not in r.stdout
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics


@pytest.mark.slow
def test_same_seed_same_training(runs):
    tmp, names, results = runs.result("same seed")
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    losses = [json.loads((tmp / name / "metrics.json").read_text())[0]["train_loss"] for name in names]
    assert losses[0] == losses[1]


def _same_seed_runs(tmp):
    names = ("a", "b")  # two processes at once: neither can see the other's state
    return tmp, names, run_clis(*[["train", "--run-dir", tmp / name, "--train-data", f"csv:{DATA}[:500]", "--units",
                                   16, "--batch-size", 16, "--steps-per-epoch", 20, "--sample-every", 0, "--seed", 11,
                                   "--no-export"] for name in names])


@pytest.mark.slow
def test_cli_help_for_every_subcommand(runs):
    for r in runs.result("help"):  # tfchargen, tfchargen train, tfchargen evaluate
        assert r.returncode == 0 and "usage: tfchargen" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(ERRORS)), ids=[match for _, match in ERRORS])
def test_cli_errors_are_one_line_exit_2(runs, i):
    r, (_, match) = runs.result(f"error {i}"), ERRORS[i]
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and match in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("tfchargen")]) == 1


@pytest.mark.slow
def test_run_dir_with_other_architecture_is_refused(runs_on_tiny_run):
    r = runs_on_tiny_run[0].result("other architecture")
    assert r.returncode == 2 and "different" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_init_from_starts_from_the_runs_weights_and_vocabulary(tiny_run, runs_on_tiny_run):
    """Fine-tuning: --init-from copies the run's vocabulary and starts from its weights (a zero
    learning rate leaves them exactly as they were); another model shape is refused."""
    from tfchargen.training import rundir

    started, tmp = runs_on_tiny_run
    fine = tmp / "fine"
    r, refused = started.result("init from")  # fine (lr 0, description field) and other (24 units)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (fine / "vocab.txt").read_bytes() == (tiny_run / "vocab.txt").read_bytes()
    _, _, before = rundir.load_trained(str(tiny_run))
    _, _, after = rundir.load_trained(str(fine))
    for a, b in zip(before.model.weights, after.model.weights):
        assert a.path == b.path and bool(tf.reduce_all(a == b)), a.path
    assert refused.returncode == 2 and "--init-from" in refused.stderr, refused.stderr[-2000:]
    assert "units 32 there, 24 here" in refused.stderr, refused.stderr[-2000:]


def test_presets_name_real_settings_and_the_two_stage_recipe_fits_together():
    """Every preset key is a train setting (a typo would be silently ignored), and the
    fine-tuning preset builds the same model as the pretraining one, which --init-from
    requires: the README's two-command recipe must run as written."""

    for name, preset in config.PRESETS.items():
        assert set(preset) <= set(config.DEFAULTS), (name, set(preset) - set(config.DEFAULTS))
    pre = {**config.DEFAULTS, **config.PRESETS["agnews-pretrain"]}
    fine = {**config.DEFAULTS, **config.PRESETS["agnews-finetune"]}
    assert {k: pre[k] for k in config.MODEL_KEYS} == {k: fine[k] for k in config.MODEL_KEYS}
    assert pre["eval_field"] == fine["field"] == "title"  # pretraining is scored on what fine-tuning trains


@pytest.mark.slow
def test_a_run_dir_that_never_trained_takes_a_corrected_command(runs):
    """A train that fails before its first epoch (here a typo'd --train-data) leaves a
    config.json, which must not block the corrected command; a trained run stays protected."""
    runs.result("never trained")


def _never_trained_run(run_dir):
    r = run_cli("train", "--run-dir", run_dir, "--train-data", f"csv:{DATA}.typo", timeout=120)
    assert r.returncode == 2 and "no such file" in r.stderr, r.stderr[-2000:]
    assert (run_dir / "config.json").exists()
    small = ["--units", 16, "--batch-size", 16, "--steps-per-epoch", 5, "--sample-every", 0, "--no-export"]
    r = run_cli("train", "--run-dir", run_dir, "--train-data", TRAIN, *small)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run_dir / "config.json").read_text())["train_data"] == TRAIN
    r = run_cli("train", "--run-dir", run_dir, "--train-data", f"csv:{DATA}[:400]", *small, timeout=120)
    assert r.returncode == 2 and "different train_data" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.slow
def test_training_output_is_plain_separate_lines_off_a_terminal(runs):
    """Captured (not a terminal): no carriage returns or colour codes; the bar, the epoch
    summary and each sample on lines of their own; samples every N epochs and after the last;
    a resumed run says where it resumes."""
    first, resumed = runs.result("output")
    assert first.returncode == 0, first.stderr[-2000:]
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for r in (first, resumed):
        assert "\r" not in r.stdout and "\x1b" not in r.stdout and "\b" not in r.stdout
    summary = re.compile(r"epoch (\d+): train loss \d+\.\d{4}, \d+ chars, \d+ chars/s; "
                         r"held-out \d+\.\d{4} nats/char \(\d+\.\d{4} bits/char\)")
    bar = re.compile(r"5/5 - \d+s - \d+m?s/step - loss: \d+\.\d{4}")  # Keras' bar, no float counter
    for r, epochs, sampled in ((first, [1], [1]), (resumed, [2, 3], [2, 3])):
        lines = r.stdout.splitlines()
        assert [int(m[1]) for m in map(summary.fullmatch, lines) if m] == epochs, r.stdout
        assert len([line for line in lines if bar.fullmatch(line)]) == len(epochs), r.stdout
        samples = [i for i, line in enumerate(lines) if line.startswith("  T=")]
        assert len(samples) == 6 * len(sampled), r.stdout  # 2 prompts x 3 temperatures per table
    lines = resumed.stdout.splitlines()
    assert "resuming after epoch 1" in lines and "Epoch 1/3" not in lines
    assert lines.index("resuming after epoch 1") < lines.index("Epoch 2/3")


def _plain_output_runs(run_dir):
    """Trains 1 epoch, then resumes to 3 (samples every 2 epochs): (first, resumed)."""
    args = ["train", "--run-dir", run_dir, "--train-data", TRAIN, "--eval-data", HELDOUT, "--units", 16,
            "--batch-size", 16, "--steps-per-epoch", 5, "--sample-every", 2, "--seed", 2, "--no-export"]
    first = run_cli(*args, "--epochs", 1)
    if first.returncode != 0:
        return first, None
    return first, run_cli(*args, "--epochs", 3)
