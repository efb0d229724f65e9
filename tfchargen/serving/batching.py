"""Request batching for `tfchargen serve`: concurrent requests share one signature call.

Whole requests merge into one call of at most ``max_batch`` rows, grouped by
``max_length`` bucket (BUCKETS) so a short request waits only for requests at most about
twice as long as itself. Each request gets exactly what it gets alone: sampling is per row
(a seeded row depends only on its own seed and position, never on its neighbours). Why
whole requests and not rows joining a running batch: docs/design.md, "Request batching".

Plain Python over ``fn(inputs: {name: np.ndarray [B]}) -> {name: np.ndarray [B]}`` (a loaded
signature in the server), so the policy is testable with any such function.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from concurrent import futures

import numpy as np

from tfchargen import contract

# max_length bucket edges of Batcher: a batch holds requests of one bucket only.
BUCKETS = (16, 32, 64, 128, 256, 512, 1024, contract.MAX_NEW_CHARS)
# The default wait for a batch to fill (--batch-timeout-ms): short next to a generation's tens
# of milliseconds, long enough for clients answered by one batch to send their next requests.
DEFAULT_TIMEOUT_MS = 5.0
MAX_WAIT_TIMEOUTS = 10  # a batch that keeps growing closes this many timeouts after it could run


class Stopped(Exception):
    """A request submitted after :meth:`Batcher.stop` (the server answers UNAVAILABLE)."""


class QueueFull(Stopped):
    """A request refused because ``max_enqueued_batches`` batches wait already (UNAVAILABLE)."""


# TensorFlow's shared_batch_scheduler.h message for a full queue (an Unavailable status).
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


def bucket_of(max_length: int) -> int:
    """The batching bucket of a request whose longest row asks for ``max_length`` characters.

    >>> [bucket_of(n) for n in (0, 16, 17, 100, 2048)]
    [0, 0, 1, 3, 7]
    """
    return min(bisect.bisect_left(BUCKETS, max_length), len(BUCKETS) - 1)


def max_length_bucket(inputs: dict) -> int:
    lengths = inputs["max_length"]
    return bucket_of(int(lengths.max()) if len(lengths) else 0)


def rows_of(inputs: dict) -> int:
    return len(next(iter(inputs.values())))


class _Task:
    __slots__ = ("inputs", "rows", "future", "queued_at")

    def __init__(self, inputs: dict):
        self.inputs, self.rows = inputs, rows_of(inputs)
        self.future = futures.Future()
        self.queued_at = time.monotonic()


class Batcher:
    """Merges concurrent calls of one signature into batches of at most ``max_batch`` rows.

    A batch forms when a thread is free to run it, and closes when it is full or no request
    has joined it for ``timeout_s`` (counted from the later of its newest request's arrival
    and the moment the thread became free), but at the latest ``MAX_WAIT_TIMEOUTS *
    timeout_s`` after that. So requests that keep arriving close together share a call, and
    a thread that just answered a batch waits a moment for those clients' next requests
    instead of running whoever else is queued alone. A batch holds requests of one bucket
    only (``bucket(inputs)``), whole requests in arrival order; the bucket whose oldest
    request waited longest goes first. ``threads`` batches run at once; while they all run,
    requests keep queueing, so batches grow with the load. If a merged call fails, each of
    its requests is re-run alone, so one request's error never becomes another's.

    Args:
        fn: ``fn(inputs: {name: np.ndarray [B]}) -> {name: np.ndarray [B]}``.
        max_batch: rows per batch.
        timeout_s: the longest a request waits for others to join its batch.
        threads: batches executing at once.
        bucket: ``bucket(inputs) -> int``; requests of different buckets never share a batch.
        max_enqueued_batches: at most this many batches wait (counted as TF Serving counts
            them: ``max_batch`` rows each, per bucket); a request beyond is refused at once with
            :class:`QueueFull` (None = no bound).
        allowed_batch_sizes: a call's rows are padded (copies of its first row, outputs
            dropped) up to the smallest of these that holds them (TF Serving's
            BatchingSession); empty = no padding.

    >>> b = Batcher(lambda x: {"y": x["x"] * 2}, max_batch=8, timeout_s=0.002)
    >>> b.submit({"x": np.array([1, 2])}).result()["y"].tolist()
    [2, 4]
    >>> b.stop()
    """

    def __init__(self, fn, max_batch: int, timeout_s: float, threads: int = 2, bucket=lambda inputs: 0,
                 name: str = "batcher", max_enqueued_batches: int | None = None, allowed_batch_sizes=()):
        self.fn, self.max_batch, self.timeout_s, self.bucket = fn, max_batch, timeout_s, bucket
        self.max_enqueued_batches, self.allowed_batch_sizes = max_enqueued_batches, tuple(allowed_batch_sizes)
        self._direct = 0  # requests of max_batch rows or more, waiting for a thread of their own
        self._queues: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self._cv = threading.Condition()
        self._free = threading.Semaphore(threads)
        self._pool = futures.ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._stopping = False
        self._free_since = 0.0
        self.batches = self.rows = 0  # calls made and the rows they held (the server's metrics)
        self._thread = threading.Thread(target=self._schedule, name=f"{name}-scheduler", daemon=True)
        self._thread.start()

    def submit(self, inputs: dict) -> futures.Future:
        task = _Task(inputs)
        with self._cv:
            if self._stopping:
                raise Stopped("the server is shutting down")
            key = self.bucket(inputs) if 0 < task.rows < self.max_batch else None
            if self._full(key, task.rows):
                raise QueueFull(QUEUE_FULL)
            if key is None:  # nothing to merge it with
                self._direct += 1
                self._pool.submit(self._run, [task], False, True)
                return task.future
            self._queues[key].append(task)
            self._cv.notify()
        return task.future

    def _full(self, key, rows: int) -> bool:
        """Whether a request of ``rows`` rows for bucket ``key`` (None: a batch of its own)
        would make more than ``max_enqueued_batches`` batches wait (call with the lock held)."""
        if self.max_enqueued_batches is None:
            return False
        batches = self._direct + (key is None)
        for k, queue in self._queues.items():
            queued = sum(t.rows for t in queue) + (rows if k == key else 0)
            batches += -(-queued // self.max_batch)
        if key is not None and key not in self._queues:
            batches += 1
        return batches > self.max_enqueued_batches

    def stop(self) -> None:
        """Runs what is queued, then stops."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _take(self) -> list[_Task] | None:
        """The next batch when one is ready, else None (call with the lock held)."""
        ready, oldest = None, None
        now = time.monotonic()
        for key, queue in self._queues.items():
            if not queue:
                continue
            full = sum(t.rows for t in queue) >= self.max_batch
            due = now >= min(max(self._free_since, queue[-1].queued_at) + self.timeout_s,
                             max(self._free_since, queue[0].queued_at) + MAX_WAIT_TIMEOUTS * self.timeout_s)
            if (full or due or self._stopping) and (oldest is None or queue[0].queued_at < oldest):
                ready, oldest = key, queue[0].queued_at
        if ready is None:
            return None
        queue, batch, rows = self._queues[ready], [], 0
        while queue and rows + queue[0].rows <= self.max_batch:
            task = queue.popleft()
            batch.append(task)
            rows += task.rows
        return batch

    def _wait_time(self) -> float | None:
        dues = [min(max(self._free_since, q[-1].queued_at) + self.timeout_s,
                    max(self._free_since, q[0].queued_at) + MAX_WAIT_TIMEOUTS * self.timeout_s)
                for q in self._queues.values() if q]
        return None if not dues else max(0.0, min(dues) - time.monotonic())

    def _schedule(self) -> None:
        while True:
            self._free.acquire()  # form a batch only when a thread can run it
            with self._cv:
                self._free_since = time.monotonic()
                while True:
                    batch = self._take()
                    if batch or (self._stopping and not any(self._queues.values())):
                        break
                    self._cv.wait(self._wait_time())
            if not batch:
                self._free.release()
                return
            self._pool.submit(self._run, batch, True)

    def _run(self, batch: list[_Task], release: bool = False, direct: bool = False) -> None:
        if direct:
            with self._cv:
                self._direct -= 1
        try:
            if len(batch) == 1:
                self._call_alone(batch[0])
                return
            names = list(batch[0].inputs)
            merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in names}
            rows = sum(t.rows for t in batch)
            try:
                out = self._call(merged, rows)
            except Exception:  # e.g. one request's bad control: each request gets its own answer
                for task in batch:
                    self._call_alone(task)
                return
            start = 0
            for task in batch:
                task.future.set_result({k: v[start:start + task.rows] for k, v in out.items()})
                start += task.rows
            self._count(rows)
        finally:
            if release:
                self._free.release()

    def _call_alone(self, task: _Task) -> None:
        try:
            task.future.set_result(self._call(task.inputs, task.rows))
            self._count(task.rows)
        except Exception as e:
            task.future.set_exception(e)

    def _call(self, inputs: dict, rows: int) -> dict:
        """``fn(inputs)``, its rows padded up to the next allowed batch size (if any)."""
        size = next((s for s in self.allowed_batch_sizes if s >= rows), rows)
        if size == rows or rows == 0:
            return self.fn(inputs)
        index = np.concatenate([np.arange(rows), np.zeros(size - rows, np.int64)])
        out = self.fn({k: v[index] for k, v in inputs.items()})
        return {k: v[:rows] for k, v in out.items()}

    def _count(self, rows: int) -> None:
        with self._cv:
            self.batches += 1
            self.rows += rows
