"""Request batching's policy (tfchargen/batching.py) over a plain function that records its calls.

The waits are tenths of a second against timeouts of several tenths, so a loaded machine
does not change which requests share a call.
"""

import threading
import time

import numpy as np
import pytest

from tfchargen.serving.batching import MAX_WAIT_TIMEOUTS, Batcher, Stopped


class Recorder:
    """fn(inputs) -> {"y": 2x}; records each call's rows; refuses negative x; can be held."""

    def __init__(self):
        self.calls, self.release = [], threading.Event()
        self.release.set()

    def __call__(self, inputs):
        self.release.wait(10)
        self.calls.append(inputs["x"].tolist())
        if (inputs["x"] < 0).any():
            raise ValueError("negative x")
        return {"y": inputs["x"] * 2}


def request(*xs):
    return {"x": np.array(xs)}


def test_requests_arriving_within_the_timeout_of_each_other_share_one_call():
    fn = Recorder()
    b = Batcher(fn, max_batch=64, timeout_s=0.3)
    # Six requests 0.1 s apart: the first waits 0.5 s in all, past one timeout, but a batch
    # closes only once no request has arrived for a whole timeout.
    futures = []
    for i in range(6):
        futures.append(b.submit(request(i)))
        time.sleep(0.1)
    assert [f.result(10)["y"].tolist() for f in futures] == [[2 * i] for i in range(6)]
    assert fn.calls == [[0, 1, 2, 3, 4, 5]]
    b.stop()


def test_a_steady_trickle_is_cut_after_max_wait():
    fn = Recorder()
    timeout = 0.05
    b = Batcher(fn, max_batch=1000, timeout_s=timeout)
    futures, t0 = [], time.monotonic()
    while time.monotonic() - t0 < 3 * MAX_WAIT_TIMEOUTS * timeout:  # never a gap of one timeout
        futures.append(b.submit(request(len(futures))))
        time.sleep(timeout / 5)
    assert [f.result(10)["y"][0] for f in futures] == [2 * i for i in range(len(futures))]
    assert len(fn.calls) >= 2, "the batch never closed while requests kept coming"
    assert sorted(x for call in fn.calls for x in call) == list(range(len(futures)))
    b.stop()


def test_a_freed_thread_waits_for_the_requests_of_the_batch_it_just_answered():
    # One thread, busy: requests queue. When it frees, requests that arrive within the
    # timeout still join the next call (clients answered by the last batch come back).
    fn = Recorder()
    b = Batcher(fn, max_batch=64, timeout_s=0.3, threads=1)
    fn.release.clear()
    first = b.submit(request(100))
    time.sleep(0.5)  # the first call runs (held)
    queued = [b.submit(request(i)) for i in range(3)]
    time.sleep(0.4)  # the queued requests are older than one timeout
    fn.release.set()
    time.sleep(0.1)
    late = [b.submit(request(i)) for i in range(3, 5)]
    assert first.result(10)["y"].tolist() == [200]
    assert [f.result(10)["y"][0] for f in queued + late] == [0, 2, 4, 6, 8]
    assert fn.calls == [[100], [0, 1, 2, 3, 4]]
    b.stop()


def test_a_failing_merged_call_answers_each_request_alone():
    fn = Recorder()
    b = Batcher(fn, max_batch=64, timeout_s=0.2)
    good, bad, other = b.submit(request(1, 2)), b.submit(request(-1)), b.submit(request(3))
    assert good.result(10)["y"].tolist() == [2, 4] and other.result(10)["y"].tolist() == [6]
    with pytest.raises(ValueError, match="negative"):
        bad.result(10)
    assert fn.calls[0] == [1, 2, -1, 3] and sorted(fn.calls[1:]) == [[-1], [1, 2], [3]]
    assert (b.batches, b.rows) == (2, 3)  # the answered calls and their rows
    b.stop()


def test_full_batches_do_not_wait_and_large_requests_run_as_they_are():
    fn = Recorder()
    b = Batcher(fn, max_batch=4, timeout_s=5.0)
    t = time.monotonic()
    outs = [b.submit(request(i, i)) for i in range(2)] + [b.submit(request(*range(9)))]
    assert [o.result(10)["y"].tolist() for o in outs] == [[0, 0], [2, 2], [2 * i for i in range(9)]]
    assert time.monotonic() - t < 4.0, "a full batch waited for the timeout"
    assert sorted(map(len, fn.calls)) == [4, 9]
    b.stop()
    with pytest.raises(Stopped):
        b.submit(request(1))
