"""Choosing a tf.distribute strategy: ``--strategy default | mirrored | multi-worker``.

* ``default``: no distribution (one device), exactly the single-process training path.
* ``mirrored``: ``tf.distribute.MirroredStrategy``: synchronous data parallelism over the
  GPUs of one machine (``--devices GPU:0,GPU:1`` picks some; without GPUs, the CPU).
* ``multi-worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` across machines (and each
  machine's GPUs), configured by the standard ``TF_CONFIG`` environment variable::

      {"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}

  Every worker runs the same command. The chief (task ``chief``, else ``worker`` 0) writes
  the run dir; the others write their checkpoints to a temporary directory that is deleted
  at the end (the standard Keras multi-worker pattern: every worker runs the same saving
  code, so any collective op inside it is matched, but only the chief's files are kept).

``make`` must run before TensorFlow executes anything (MultiWorkerMirroredStrategy has to
configure the runtime's collective ops at start-up); it waits until every worker is up.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi-worker")


@dataclass
class Setup:
    """A strategy and this process's place in the cluster."""

    strategy: tf.distribute.Strategy
    name: str
    is_chief: bool = True
    task_type: str | None = None
    task_id: int | None = None
    num_workers: int = 1

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def task(self) -> str:
        return f"{self.task_type}:{self.task_id}" if self.task_type else "local"


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable ({} when unset)."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return cfg


def is_chief(cluster: dict, task_type: str | None, task_id: int | None) -> bool:
    """The Keras/TF convention: the ``chief`` task, or ``worker`` 0 when there is no chief."""
    if not task_type:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and int(task_id or 0) == 0 and "chief" not in (cluster or {})


def parse_devices(spec) -> list[str] | None:
    """``"GPU:0,GPU:1"`` or a list -> ``["GPU:0", "GPU:1"]``; None/empty -> None."""
    if not spec:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    devices = [d.strip() for d in items if d and d.strip()]
    return devices or None


def make(name: str = "default", devices=None) -> Setup:
    """The strategy for ``--strategy NAME`` (and ``--devices`` for ``mirrored``)."""
    devices = parse_devices(devices)
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if devices and name != "mirrored":
        raise ValueError("--devices applies to --strategy mirrored only")
    if name == "default":
        return Setup(tf.distribute.get_strategy(), name)
    if name == "mirrored":
        if devices:  # MirroredStrategy accepts unknown devices and fails (or falls back) later
            have = {_short(d.name) for d in tf.config.list_logical_devices()}
            missing = [d for d in devices if _short(d) not in have]
            if missing:
                raise ValueError(f"--devices: no device {', '.join(missing)} here "
                                 f"(this machine has {', '.join(sorted(have))})")
        return Setup(tf.distribute.MirroredStrategy(devices=devices), name)

    cfg = tf_config()
    cluster, task = cfg.get("cluster") or {}, cfg.get("task") or {}
    if not cluster or not task:
        raise ValueError("--strategy multi-worker needs TF_CONFIG with 'cluster' and 'task', e.g. "
                         '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                         '"task": {"type": "worker", "index": 0}}')
    task_type, task_id = task.get("type"), int(task.get("index", 0))
    if task_type not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG task type {task_type!r} is not supported (use chief or worker)")
    jobs = cluster.get(task_type) or []
    if not 0 <= task_id < len(jobs):
        raise ValueError(f"TF_CONFIG task {task_type}:{task_id} is not in the cluster {cluster}")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    workers = sum(len(cluster.get(j) or []) for j in ("chief", "worker"))
    return Setup(strategy, name, is_chief(cluster, task_type, task_id), task_type, task_id, workers)


def _short(device: str) -> str:
    """"/job:localhost/replica:0/task:0/device:GPU:0", "/gpu:0", "GPU:0" -> "GPU:0"."""
    return device.split("device:")[-1].lstrip("/").upper()


def all_sum(strategy: tf.distribute.Strategy, values: list[float]) -> list[float]:
    """Sums ``values`` over all replicas of all workers (every worker must call it)."""
    x = tf.constant(values, tf.float64)
    summed = tf.function(lambda: strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(x)), axis=None))()
    return [float(v) for v in summed.numpy()]


def patch_for_multi_worker(model, strategy: tf.distribute.Strategy) -> None:
    """Works around two Keras 3 bugs with MultiWorkerMirroredStrategy (keras-team/keras#20585),
    on this model instance only:

    * before training, ``fit`` reduces a whole (inputs, targets) batch with ``strategy.reduce``,
      which CollectiveAllReduceStrategy cannot do for a structure; the batch only gives the
      model its input shapes, so Keras gets the first local replica's batch instead;
    * ``fit`` averages each step's metrics over replicas with ``reduce("MEAN", axis=0)``,
      which fails for scalars; the step returns them as [1] vectors, whose mean over the
      replicas is the same average Keras computes under MirroredStrategy.
    """
    build, step = model._maybe_symbolic_build, model.train_step

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
                break
        return build(data_batch=data_batch)

    def train_step(data):
        return tf.nest.map_structure(lambda v: tf.reshape(v, [1]), step(data))

    model._maybe_symbolic_build, model.train_step = maybe_symbolic_build, train_step
