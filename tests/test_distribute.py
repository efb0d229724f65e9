"""Training under tf.distribute: mirrored on 2 logical CPU devices, two workers on loopback.

Each run is a fresh process: logical devices and MultiWorkerMirroredStrategy must be set up
before TensorFlow initializes. Tiny models, a few steps.
"""

import json
import os
import re
import socket
import subprocess
import sys

import pytest
from helpers import ROOT, Background, run_cli

pytestmark = pytest.mark.slow

DATA_ROWS = "[:600]"
EVAL_ROWS = "[6000:6300]"
# clipnorm 0.05 clips every step: clipping must see the summed gradient, not a replica's share.
TINY = dict(units=16, batch_size=8, steps_per_epoch=6, epochs=2, sample_every=0, seed=3, learning_rate=0.01,
            clipnorm=0.05)

# Splits the CPU into two logical devices before TensorFlow initializes, then trains.
TRAIN_ON_TWO_CPUS = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfchargen.training import train
print("ROW " + json.dumps(train.train(json.loads(sys.argv[2]), sys.argv[1], verbose=0)))
"""


def _start_two_cpu_run(run_dir, cfg):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return Background([sys.executable, "-c", TRAIN_ON_TWO_CPUS, run_dir, json.dumps(cfg)], env=env)


def _finish(jobs, timeout):
    """Waits for every run (Background); on a timeout kills them all and fails (a test never
    hangs); their (stdout, stderr) in order."""
    try:
        return [(r.stdout, r.stderr) for r in (job.wait(timeout) for job in jobs)]
    finally:
        for job in jobs:
            job.kill()


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start_two_workers(tmp, data_path):
    """Worker 0 (the chief) and worker 1 of a MultiWorkerMirroredStrategy run on loopback."""
    run_dir, export = tmp / "run", tmp / "models" / "chargen"
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    args = [sys.executable, "-m", "tfchargen", "train", "--strategy", "multi-worker", "--run-dir", str(run_dir),
            "--train-data", f"csv:{data_path}{DATA_ROWS}", "--eval-data", f"csv:{data_path}{EVAL_ROWS}",
            "--units", "16", "--batch-size", "8", "--steps-per-epoch", "6", "--epochs", "2",
            "--sample-every", "0", "--seed", "3", "--learning-rate", "0.01", "--clipnorm", "0.05",
            "--export-base", str(export),
            "--default-max-length", "12"]
    temps = [tmp / f"tmp{i}" for i in range(2)]
    procs = []
    for i in range(2):
        temps[i].mkdir()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(temps[i]),
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(Background(args, env=env))
    return {"procs": procs, "run_dir": run_dir, "export": export, "temps": temps}


@pytest.fixture(scope="module")
def started(tmp_path_factory, data_path):
    """This module's training runs, all started at once at its first test: the same tiny run
    (same seed, same global batch 8) under the default strategy and under MirroredStrategy
    on 2 logical CPU devices (4 rows per replica), side by side; and the two workers."""
    base = tmp_path_factory.mktemp("distribute")
    cfg = dict(TINY, train_data=f"csv:{data_path}{DATA_ROWS}", eval_data=f"csv:{data_path}{EVAL_ROWS}")
    runs = {"default": (base / "default", cfg),
            "mirrored": (base / "mirrored", dict(cfg, strategy="mirrored", devices="CPU:0,CPU:1"))}
    procs = [_start_two_cpu_run(d, c) for d, c in runs.values()]
    workers = _start_two_workers(tmp_path_factory.mktemp("workers"), data_path)
    yield {"runs": runs, "procs": procs, "workers": workers}
    for job in procs + workers["procs"]:  # a run no test waited for
        job.kill()


@pytest.fixture(scope="module")
def default_and_mirrored(started):
    """The run dirs of the default and the mirrored run, by name."""
    procs = started["procs"]
    for job, (_, err) in zip(procs, _finish(procs, timeout=420)):
        assert job.proc.returncode == 0, err[-3000:]
    return {name: d for name, (d, _) in started["runs"].items()}


def test_mirrored_on_two_devices_matches_one_device(default_and_mirrored):
    one, two = (_metrics(default_and_mirrored[k]) for k in ("default", "mirrored"))
    assert [m["strategy"] for m in one] == ["default"] * 2 and [m["num_replicas"] for m in one] == [1, 1]
    assert [m["strategy"] for m in two] == ["mirrored"] * 2 and [m["num_replicas"] for m in two] == [2, 2]
    for a, b in zip(one, two):
        # Same batches (split across the replicas), same global characters: chars/s is global.
        assert a["train_chars"] == b["train_chars"] > 0
        # Padding differs between the two halves of a batch; the loss is still the global mean.
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["eval_nats_per_char"] == pytest.approx(a["eval_nats_per_char"], rel=1e-4)
        assert b["eval_chars"] == a["eval_chars"]
    assert one[-1]["train_loss"] < one[0]["train_loss"]  # it learned something
    config = json.loads((default_and_mirrored["mirrored"] / "config.json").read_text())
    assert config["strategy"] == "mirrored" and config["devices"] == ["CPU:0", "CPU:1"]


def test_mirrored_run_resumes_on_one_device(default_and_mirrored, data_path):
    """Weights checkpoints are strategy-independent: 2 replicas -> 1 continues the run."""
    run_dir = default_and_mirrored["mirrored"]
    before = _metrics(run_dir)
    r = run_cli("train", "--run-dir", run_dir, "--train-data", f"csv:{data_path}{DATA_ROWS}",
                "--eval-data", f"csv:{data_path}{EVAL_ROWS}", "--units", 16, "--batch-size", 8,
                "--steps-per-epoch", 6, "--epochs", 3, "--sample-every", 0, "--seed", 3,
                "--learning-rate", 0.01, "--clipnorm", 0.05, "--no-export", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Epoch 3/3" in r.stdout and "Epoch 1/3" not in r.stdout and "Epoch 2/3" not in r.stdout
    after = _metrics(run_dir)
    assert [m["epoch"] for m in after] == [1, 2, 3] and after[:2] == before
    assert [m["strategy"] for m in after] == ["mirrored", "mirrored", "default"]
    assert after[2]["num_replicas"] == 1
    # It continued from the checkpoint: a fresh model would be back near epoch 1's loss.
    assert after[2]["eval_nats_per_char"] < before[0]["eval_nats_per_char"] - 0.2
    assert json.loads((run_dir / "config.json").read_text())["strategy"] == "default"


def test_two_workers_on_loopback(started, capsys):
    workers = started["workers"]
    procs, run_dir, export, temps = (workers[k] for k in ("procs", "run_dir", "export", "temps"))
    outs = _finish(procs, timeout=420)
    for job, (_, err) in zip(procs, outs):
        assert job.proc.returncode == 0, err[-3000:]
    chief, other = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert other["chief"] is False and "export" not in other
    assert chief["strategy"] == "multi-worker" and chief["num_replicas"] == 2

    # The chief wrote the run dir; worker 1 wrote only to its own temporary directory, now gone.
    metrics = _metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [1, 2] and all(m["num_replicas"] == 2 for m in metrics)
    assert metrics[-1]["eval_nats_per_char"] < metrics[0]["eval_nats_per_char"]
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["epoch-001.weights.h5", "epoch-002.weights.h5"]
    assert (run_dir / "model.weights.h5").exists() and (run_dir / "backup" / "latest.weights.h5").exists()
    events = [f for _, _, fs in os.walk(run_dir / "logs") for f in fs]
    # TensorBoard names its files ...<host>.<pid>.<n>.v2: all of them are the chief's.
    assert events and all(re.search(r"\.(\d+)\.\d+\.v2$", f).group(1) == str(procs[0].proc.pid) for f in events)
    assert os.listdir(temps[1]) == []  # worker 1's temporary run dir was deleted
    assert os.listdir(export) == ["1"]

    # The chief's export, read from disk by this process (not the one that wrote it), generates
    # through the CLI's code path.
    from tfchargen.cli import app as cli

    capsys.readouterr()
    assert cli.main(["generate", "--model", str(export), "--prompt", "Today ", "--temperature", "0",
                     "--max-length", "12"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Today ") and len(out.rstrip("\n")) > len("Today ")


@pytest.mark.parametrize("extra,match", [
    (["--strategy", "multi-worker"], "needs TF_CONFIG"),
    (["--strategy", "mirrored", "--devices", "GPU:7"], "no device GPU:7"),
])
def test_strategy_errors_are_one_line_exit_2(tmp_path, extra, match):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    r = subprocess.run([sys.executable, "-m", "tfchargen", "train", "--run-dir", str(tmp_path / "x"), *extra],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"))
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "x").exists()
