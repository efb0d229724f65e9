"""Training throughput under tf.distribute: one device vs. MirroredStrategy on N devices.

    python benchmarks/distribute_scaling.py                  # default vs mirrored on 2 CPUs
    python benchmarks/distribute_scaling.py --replicas 1,2,4 --out /tmp/ds.json

Each variant trains the same model on the same global batch in a fresh process (logical
devices must be configured before TensorFlow initializes): the CPU is split into N logical
devices and ``tfchargen.training.train.train`` runs with ``strategy=mirrored`` over them (N=1: the
default strategy, no distribution). Reported: global characters/second over the epochs
after the first (the first includes tracing), and the final train loss.

On a CPU the logical devices share the same cores, so no speedup is expected: this measures
the overhead of the distributed step (per-replica graphs, all-reduce), not scaling. On a
machine with several GPUs use ``--gpus`` (each replica one GPU) to measure scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import common  # next to this script
from common import REPO

CHILD = """
import json, sys
import tensorflow as tf
n, gpus, run_dir, cfg = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3], json.loads(sys.argv[4])
if gpus:
    devices = [f"GPU:{i}" for i in range(n)]
else:
    cpu = tf.config.list_physical_devices("CPU")[0]
    if n > 1:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    devices = [f"CPU:{i}" for i in range(n)]
if n > 1:
    cfg.update(strategy="mirrored", devices=devices)
from tfchargen.training import train
train.train(cfg, run_dir, log=lambda *a: None, verbose=0)
print("METRICS " + open(run_dir + "/metrics.json").read().replace(chr(10), " "))
"""


def run_variant(n: int, gpus: bool, cfg: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        t0 = time.perf_counter()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env.pop("TF_CONFIG", None)
        r = subprocess.run([sys.executable, "-c", CHILD, str(n), "1" if gpus else "0", run_dir, json.dumps(cfg)],
                           capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
        wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{n} replicas failed:\n{r.stderr[-3000:]}")
    line = next(x for x in r.stdout.splitlines() if x.startswith("METRICS "))
    rows = json.loads(line[len("METRICS "):])
    timed = rows[1:] or rows
    chars = sum(m["train_chars"] for m in timed)
    seconds = sum(m["seconds"] for m in timed)
    return {"replicas": n, "strategy": rows[-1]["strategy"], "chars_per_second": chars / seconds,
            "ms_per_step": 1000 * seconds / (len(timed) * cfg["steps_per_epoch"]),
            "first_epoch_seconds": rows[0]["seconds"], "final_train_loss": rows[-1]["train_loss"],
            "process_seconds": wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=common.DEFAULT_DATA, help="AG News CSV (default: %(default)s)")
    p.add_argument("--replicas", default="1,2", help="comma-separated replica counts (1 = default strategy)")
    p.add_argument("--gpus", action="store_true", help="one GPU per replica instead of logical CPU devices")
    p.add_argument("--mode", default="windows", choices=["windows", "examples"])
    p.add_argument("--batch-size", type=int, default=64, help="global batch")
    p.add_argument("--units", type=int, default=128)
    p.add_argument("--steps-per-epoch", type=int, default=30)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", default=common.result_path(__file__), help="JSON results (default: %(default)s)")
    args = p.parse_args(argv)
    cfg = dict(train_data=f"csv:{args.data}[:{common.TRAIN_ROWS}]", mode=args.mode, window=128,
               batch_size=args.batch_size,
               units=args.units, steps_per_epoch=args.steps_per_epoch, epochs=args.epochs, sample_every=0, seed=1,
               learning_rate=3e-3)
    machine = common.machine_info(probe=True)
    results = []
    for n in (int(x) for x in args.replicas.split(",")):
        res = run_variant(n, args.gpus, cfg, args.timeout)
        results.append(res)
        print(json.dumps(res), flush=True)
    base = results[0]["chars_per_second"]
    for r in results:
        r["vs_first"] = r["chars_per_second"] / base
    machine["loadavg_after"] = os.getloadavg()
    common.write_result(args.out, {
        "benchmark": "distribute_scaling", "config": cfg, "devices": "GPU" if args.gpus else "logical CPU",
        "results": results,
        "note": "logical CPU devices share the same cores: no speedup is expected, this measures overhead"},
        machine=machine)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
