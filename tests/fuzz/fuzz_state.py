#!/usr/bin/env python
"""Seeded fuzzer for the `continue` signature's untrusted ``state_bytes``.

    python tests/fuzz/fuzz_state.py --model models/chargen [--cases 2000] [--seed 0] [--json OUT]

Takes valid states from `start` (random prompts and controls) and hands `continue` damaged
ones: cut, extended, empty, random bytes of any length, bit flips, edited header fields
(magic, version, fingerprint, position, ended: negatives, fractions, NaN, +-inf, 2**31+),
edited values (NaN, +-inf, huge, subnormal), states of another shape, rows mixed with valid
ones in a batch; and valid states with valid controls, whose chunk must equal the rest of
one `generate` call for seeded and greedy rows. Every call must either return well-formed
outputs or raise InvalidArgumentError carrying one of the documented state messages, and
no call may hang (faulthandler aborts with a stack dump).

Exit code 1 on any unexpected outcome. Needs TensorFlow, numpy and tfchargen.contract.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import json
import math
import os
import random
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import tensor_pb2  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from tfchargen import contract  # noqa: E402
from tfchargen.savedmodel import locate  # noqa: E402

STATE_MESSAGES = (contract.MSG_STATE_SIZE, contract.MSG_STATE_FORMAT, contract.MSG_STATE_MODEL,
                  contract.MSG_STATE_VALUES)
HANG_S = 120.0
PROMPTS = [b"Today ", b"", b"On Sunday ", b"x" * 40, "\u65e5\u672c".encode(), b"\xff\xfe", b"Stocks rise"]


class Model:
    def __init__(self, path: str):
        path = locate.newest(path)
        self.path = path
        loaded = tf.saved_model.load(path)
        self.sigs = {k: loaded.signatures[k] for k in ("generate", "start", "continue")}
        self._keep = loaded

    def call(self, signature, inputs):
        types = contract.SIGNATURES[signature][0]
        args = {k: tf.constant(np.asarray(v, dtype=object if types[k] == "string" else
                                          tf.as_dtype(types[k]).as_numpy_dtype), tf.as_dtype(types[k]),
                               shape=[len(v)]) for k, v in inputs.items()}
        return {k: v.numpy() for k, v in self.sigs[signature](**args).items()}


def random_controls(rng: random.Random, n: int) -> dict:
    return dict(max_length=[rng.choice([0, 1, 3, 8, 20]) for _ in range(n)],
                temperature=[rng.choice([0.0, 0.7, 1.0, 2.0, 1e-30]) for _ in range(n)],
                top_k=[rng.choice([0, 0, 1, 5]) for _ in range(n)],
                top_p=[rng.choice([1.0, 1.0, 0.9, 1e-6]) for _ in range(n)],
                seed=[rng.choice([0, rng.randint(1, 2**62), -(2**63)]) for _ in range(n)])


def edit(state: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One damaged variant of a valid state and the name of the damage."""
    kind = rng.choice(["cut", "extend", "empty", "random", "random_len", "flip", "flips", "header", "value",
                       "values", "zeros", "swap"])
    b = bytearray(state)
    if kind == "cut":
        return kind, state[:rng.randrange(len(state))]
    if kind == "extend":
        return kind, state + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if kind == "empty":
        return kind, b""
    if kind == "random":
        return kind, bytes(rng.randrange(256) for _ in range(len(state)))
    if kind == "random_len":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randint(0, 3 * len(state))))
    if kind in ("flip", "flips"):
        for _ in range(1 if kind == "flip" else rng.randint(2, 40)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return kind, bytes(b)
    if kind == "zeros":
        return kind, bytes(len(state))
    if kind == "swap":
        i, j = sorted(rng.sample(range(len(b)), 2))
        b[i], b[j] = b[j], b[i]
        return kind, bytes(b)
    proto = tensor_pb2.TensorProto.FromString(state)
    specials = [float("nan"), float("inf"), float("-inf"), -1.0, 0.5, 2.0**31, 2.0**53, -(2.0**63), 1e308,
                5e-324, -0.0, 3.0, contract.MAX_STREAM_CHARS + 1.0, float(contract.MAX_STREAM_CHARS)]
    if kind == "header":
        proto.double_val[rng.randrange(len(proto.double_val))] = rng.choice(specials)
    else:
        for _ in range(1 if kind == "value" else rng.randint(2, 20)):
            proto.float_val[rng.randrange(len(proto.float_val))] = rng.choice(
                [float("nan"), float("inf"), float("-inf"), 3.4e38, -3.4e38, 1e7, 1e-45, 0.0, -1e6])
    return kind, proto.SerializeToString()


def check_outputs(out: dict, sizes: list[int]) -> None:
    n = len(sizes)
    for key in contract.CONTINUE_OUTPUTS:
        assert key in out and out[key].shape == (n,), f"output {key} malformed"
    for i, size in enumerate(sizes):
        cont = out["continuation"][i].decode("utf-8")  # raises on invalid UTF-8
        assert out["text"][i] == out["continuation"][i], f"row {i}: text != continuation"
        assert 0 <= out["num_chars"][i] <= size, f"row {i}: num_chars {out['num_chars'][i]} > max_length {size}"
        assert len(cont) == out["num_chars"][i], f"row {i}: {len(cont)} characters, num_chars {out['num_chars'][i]}"
        lp = float(out["log_prob"][i])
        assert math.isfinite(lp) and lp <= 0, f"row {i}: log_prob {lp}"


def run_case(model: Model, rng: random.Random, case: int) -> tuple[str, str]:
    """-> (outcome, detail): ok | exact | invalid_argument | unexpected:<kind>."""
    n = rng.choice([1, 1, 2, 3, 8])
    prompts = [rng.choice(PROMPTS) for _ in range(n)]
    first = random_controls(rng, n)
    start = model.call("start", {"prompt": prompts, **first})
    states = list(start[contract.STATE])
    damaged = case % 4 != 0  # a quarter of the cases continue valid states, mostly with the same controls
    nxt = random_controls(rng, n)
    if not damaged and rng.random() < 0.8:
        nxt = {**first, "max_length": nxt["max_length"]}
    kinds = []
    if damaged:
        for i in rng.sample(range(n), rng.randint(1, n)):
            kind, states[i] = edit(states[i], rng)
            kinds.append(kind)
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    try:
        out = model.call("continue", {contract.STATE: states, **nxt})
        error = None
    except tf.errors.InvalidArgumentError as e:
        error = e.message
    except Exception as e:  # noqa: BLE001 - any other kind is the finding
        return "unexpected:exception", f"{kinds}: {type(e).__name__}: {str(e)[:300]}"
    finally:
        faulthandler.cancel_dump_traceback_later()
    if error is not None:
        if not damaged:
            return "unexpected:rejected_valid", error[:300]
        if not any(m in error for m in STATE_MESSAGES):
            return "unexpected:wrong_message", f"{kinds}: {error[:300]}"
        return "invalid_argument", ""
    try:
        check_outputs(out, nxt["max_length"])
    except (AssertionError, UnicodeDecodeError) as e:
        return "unexpected:contract", f"{kinds}: {str(e)[:300]}"
    if damaged:
        return "ok", ""  # a damaged state that decodes is a well-formed stream: allowed
    # Valid states: start + continue equal one generate call for seeded and greedy rows.
    total = [a + b for a, b in zip(first["max_length"], nxt["max_length"])]
    same = {k: first[k] for k in ("temperature", "top_k", "top_p", "seed")}
    if same != {k: nxt[k] for k in same}:
        return "ok", ""  # the controls changed between chunks: no single call to compare with
    one = model.call("generate", {"prompt": prompts, "max_length": total, **same})
    for i in range(n):
        if same["seed"][i] != 0 or same["temperature"][i] == 0:
            if start["continuation"][i] + out["continuation"][i] != one["continuation"][i]:
                return "unexpected:inexact", f"row {i}: chunks differ from one generate call"
    return "exact", ""


def environment(argv) -> dict:
    import datetime
    import platform
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=here).stdout.strip()
    return {"commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
            "tensorflow": tf.__version__,
            "command": " ".join(["python", "tests/fuzz/fuzz_state.py", *(sys.argv[1:] if argv is None else argv)])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a version directory or an export base (newest version)")
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args(argv)
    model = Model(args.model)
    rng = random.Random(args.seed)
    outcomes, failures = collections.Counter(), []
    t0 = time.perf_counter()
    for case in range(args.cases):
        outcome, detail = run_case(model, rng, case)
        outcomes[outcome] += 1
        if outcome.startswith("unexpected"):
            failures.append({"case": case, "outcome": outcome, "detail": detail})
            print(f"case {case}: {outcome}: {detail}", file=sys.stderr, flush=True)
        if (case + 1) % 500 == 0:
            print(f"{case + 1} cases, {len(failures)} unexpected, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    summary = {"model": model.path, "cases": args.cases, "seed": args.seed, "unexpected": len(failures),
               "wall_seconds": round(time.perf_counter() - t0, 1), "outcomes": dict(sorted(outcomes.items())),
               "failures": failures[:20],
               "environment": environment(argv)}
    text = json.dumps(summary, indent=2)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
