#!/usr/bin/env python
"""Seeded fuzzer for an exported tfchargen SavedModel's three signatures.

    python tests/fuzz/fuzz_signatures.py --model models/chargen [--cases 10000] [--seed 0]
                                         [--default-max-length 100] [--json OUT]

Calls ``serving_default``, ``generate`` and ``score`` with random bytes, random and
hostile Unicode (invalid UTF-8, NUL, combining marks, emoji, surrogates as bytes, prompts
up to 100k characters, empty strings, empty and mixed batches) and extreme controls (0,
negatives, NaN, +-inf, subnormals, 2**31-1, -2**31, 64-bit seeds). Every call must either
return outputs that keep the README's contract or raise InvalidArgumentError with the
documented message of a control it broke, within a time bound proportional to its
max_length. Seeded rows are re-run alone now and then: the same text, alone or in a batch.

Prints (and with --json writes) a summary: counts by outcome and signature, the slowest call
per max_length range, and the first failures. Exit code 1 on any unexpected outcome (an
exception of another kind, a wrong message, an accepted invalid control, a broken output,
a time-bound violation); a hung call aborts the run (faulthandler) with a stack dump.

Needs only TensorFlow, numpy and tfchargen's plain-Python contract.py: it reads the vocabulary
from the model's assets.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tfchargen import contract  # noqa: E402  (plain Python: the contract)
from tfchargen.common import files  # noqa: E402  (plain Python: the atomic write)
from tfchargen.savedmodel import locate  # noqa: E402

CAP = contract.MAX_NEW_CHARS
MAX_PROMPT = contract.MAX_PROMPT_CHARS  # score counts only the last MAX_PROMPT known characters
FLT_MIN = float(np.finfo(np.float32).tiny)  # smallest normal float32; subnormals may be flushed to 0
SPACE_LIKE = "\t\n\r\x0b\x0c\x85\u2028\u2029"
SEPARATOR = "\x1e"  # read as <eos> inside a text
MESSAGES = {  # the part of each check's message (contract.MSG_*) a broken control must raise
    "mismatch": contract.MSG_ONE_PER_PROMPT.format(name="").strip(),
    "max_length": os.path.commonprefix([contract.MSG_MAX_LENGTH_LOW, contract.MSG_MAX_LENGTH_HIGH]).strip(),
    "temperature": contract.MSG_TEMPERATURE,
    "top_k": contract.MSG_TOP_K,
    "top_p": contract.MSG_TOP_P,
}
# Time bound of one call, linear in max_length: BASE + step(rows) * (new characters + the
# longest prompt's known characters, at most 4096) + PER_BYTE * input bytes, times
# --time-slack, where step(rows) = max(PER_STEP, ROW_STEP_FACTOR * rows * the model's own cost
# of one row-step, measured at start through `score`).
BASE_S, PER_STEP_S, PER_BYTE_S, ROW_STEP_FACTOR = 2.0, 0.004, 3e-5, 10.0

# Pieces that break naive text handling; prompts are built from them and random data.
HOSTILE = [
    b"", b"\x00", b"a\x00b", "\x1e".encode(), b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xe0\x80\xaf",
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80", b"\xf0\x9f", b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80", b"\x80", b"\xbf\xbf", "e\u0301\u0301\u0301".encode(), "\u0301".encode() * 50,
    "😀".encode(), "👩‍👩‍👧‍👦".encode(), "🇯🇵".encode(), "\ufeff".encode(), "\uffff".encode(), "\U0010ffff".encode(),
    "\u202e".encode(), "مرحبا".encode(), "日本語".encode(), "\u2028\u2029".encode(), b"\t\n\r\x0b\x0c",
    "\x85".encode(), b"\\", b'"', b"'", b"%s%n", b"<eos>", b"<pad>", "Ω≈ç√∫".encode(), b"Today ",
]
NEWS = ["Today ", "On Sunday ", "Stocks rise as oil falls", "Google IPO", "Red Sox win", "Iraq: ", "AP - "]


# -- the documented contract ------------------------------------------------------------------
def normalize(prompt: bytes) -> str:
    """The model's view of a string: invalid UTF-8 -> U+FFFD, control whitespace -> space."""
    text = prompt.decode("utf-8", "replace")
    for ch in SPACE_LIKE:
        text = text.replace(ch, " ")
    return text


def f32(x) -> float:
    return float(np.float32(x))


def expected_errors(batch: int, controls: dict) -> set[str]:
    """The InvalidArgument reasons a generate call may report ({} = it must succeed).

    ``controls`` maps each control to its list of values; several broken controls may be
    reported in any order. Subnormal top_p may be flushed to 0 by the CPU: either outcome."""
    reasons = set()
    if any(len(v) != batch for v in controls.values()):
        reasons.add("mismatch")
    if any(not 0 <= m <= CAP for m in controls["max_length"]):
        reasons.add("max_length")
    if any(not (math.isfinite(f32(t)) and f32(t) >= 0) for t in controls["temperature"]):
        reasons.add("temperature")
    if any(k < 0 for k in controls["top_k"]):
        reasons.add("top_k")
    if any(not 0 < f32(p) <= 1 for p in controls["top_p"]):
        reasons.add("top_p")
    return reasons


def maybe_flushed(controls: dict) -> bool:
    return any(0 < f32(p) < FLT_MIN for p in controls["top_p"])


class Model:
    """A loaded version directory (or the newest version under an export base)."""

    def __init__(self, path: str):
        path = locate.newest(path)
        self.path = path
        self.loaded = tf.saved_model.load(path)
        with open(os.path.join(path, "assets", "vocab.txt"), encoding="utf-8") as f:
            entries = f.read().split("\n")
        if entries[-1] == "":
            entries.pop()
        self.chars = frozenset(entries[1:-1])
        self.vocab_size = len(entries)
        self.sigs = {name: self.loaded.signatures[name] for name in ("serving_default", "generate", "score")}

    _cache: dict = {}

    @classmethod
    def cached(cls, path: str) -> "Model":
        """One loaded instance per path and process (loading and first calls cost seconds)."""
        if path not in cls._cache:
            cls._cache[path] = cls(path)
        return cls._cache[path]

    def call(self, signature: str, prompts: list[bytes], controls: dict | None = None) -> dict:
        dtypes = dict(max_length=tf.int32, temperature=tf.float32, top_k=tf.int32, top_p=tf.float32, seed=tf.int64)
        key = "text" if signature == "score" else "prompt"
        kwargs = {key: tf.constant(prompts, tf.string, shape=[len(prompts)])}
        for name, values in (controls or {}).items():
            kwargs[name] = tf.constant(np.array(values, dtype=dtypes[name].as_numpy_dtype), dtypes[name],
                                       shape=[len(values)])
        return {k: v.numpy() for k, v in self.sigs[signature](**kwargs).items()}

    def known(self, text: bytes) -> int:
        """Characters of ``text`` the model reads: known ones and the <eos> separator."""
        return sum(1 for ch in normalize(text) if ch in self.chars or ch == SEPARATOR)


def check_generate(model: Model, prompts: list[bytes], max_lengths: list[int], out: dict, exact=True) -> None:
    """Raises AssertionError unless ``out`` keeps the generate contract for these rows.

    ``exact=False``: the rows' max_length is unknown (serving_default of an export whose
    default is not given), ``max_lengths`` are then only upper bounds."""
    n = len(prompts)
    for key in ("text", "continuation", "num_chars", "ended_with_eos", "log_prob"):
        assert key in out and out[key].shape == (n,), f"output {key} has shape {out.get(key, np.array(0)).shape}"
    for i, (prompt, limit) in enumerate(zip(prompts, max_lengths)):
        text, cont = out["text"][i], out["continuation"][i]
        num, ended, lp = int(out["num_chars"][i]), bool(out["ended_with_eos"][i]), float(out["log_prob"][i])
        try:
            text_s, cont_s = text.decode("utf-8"), cont.decode("utf-8")
        except UnicodeDecodeError as e:
            raise AssertionError(f"row {i}: output is not valid UTF-8: {e}") from None
        assert 0 <= num <= limit <= CAP, f"row {i}: num_chars {num} outside 0..max_length {limit}"
        assert ended or num == limit or not exact, f"row {i}: stopped at {num} < max_length {limit} without <eos>"
        assert len(cont_s) == num, f"row {i}: continuation has {len(cont_s)} characters, num_chars {num}"
        stray = set(cont_s) - model.chars
        assert not stray, f"row {i}: continuation holds characters outside the vocabulary: {sorted(stray)[:5]!r}"
        assert text_s == normalize(prompt) + cont_s, f"row {i}: text != normalized prompt + continuation"
        assert math.isfinite(lp) and lp <= 0, f"row {i}: log_prob {lp} not finite and <= 0"
        if limit == 0:
            assert num == 0 and not ended and lp == 0 and cont == b"", f"row {i}: max_length 0 generated"


def check_score(model: Model, texts: list[bytes], out: dict) -> None:
    n = len(texts)
    for key in ("nats_per_char", "log_prob", "num_chars"):
        assert key in out and out[key].shape == (n,), f"output {key} has shape {out.get(key, np.array(0)).shape}"
    for i, t in enumerate(texts):
        nats, lp, num = float(out["nats_per_char"][i]), float(out["log_prob"][i]), int(out["num_chars"][i])
        want = min(model.known(t), MAX_PROMPT)
        assert num == want, f"row {i}: num_chars {num}, expected {want}"
        assert math.isfinite(nats) and nats >= 0, f"row {i}: nats_per_char {nats}"
        assert math.isfinite(lp) and lp <= 0, f"row {i}: log_prob {lp}"
        if num == 0:
            assert nats == 0 and lp == 0, f"row {i}: empty text scored {nats}, {lp}"
        else:
            assert math.isclose(nats * num, -lp, rel_tol=1e-4, abs_tol=1e-3), f"row {i}: nats*n != -log_prob"


def time_bound(steps: int, rows: int, prompt_steps: int, input_bytes: int, slack: float = 1.0,
               row_step_s: float = 0.0) -> float:
    """Seconds one call may take: linear in max_length (steps), in the prompt pass and in the input."""
    step_s = max(PER_STEP_S, ROW_STEP_FACTOR * row_step_s * rows)
    return slack * (BASE_S + step_s * (steps + prompt_steps) + PER_BYTE_S * input_bytes)


def calibrate(model: "Model") -> float:
    """Seconds of one RNN step for one row of this model (the prompt pass of `score`)."""
    rows, steps = 32, 1024
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        model.call("score", [b"x" * steps] * rows)
        best = min(best, time.perf_counter() - t0)
    return best / (rows * steps)


# -- random cases -----------------------------------------------------------------------------
def random_prompt(rng: random.Random) -> bytes:
    kind = rng.choices(["news", "ascii", "empty", "bytes", "hostile", "unicode", "long"],
                       [20, 20, 8, 15, 20, 15, 2])[0]
    if kind == "news":
        return rng.choice(NEWS).encode()
    if kind == "ascii":
        return bytes(rng.randint(32, 126) for _ in range(rng.randint(1, 40)))
    if kind == "empty":
        return b""
    if kind == "bytes":
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 64)))
    if kind == "hostile":
        return b"".join(rng.choice(HOSTILE) for _ in range(rng.randint(1, 8)))
    if kind == "unicode":
        planes = [(0x20, 0x7F), (0xA0, 0x2FF), (0x300, 0x36F), (0x370, 0xD7FF), (0xE000, 0xFFFF),
                  (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF)]
        return "".join(chr(rng.randint(*rng.choice(planes))) for _ in range(rng.randint(1, 30))).encode(
            "utf-8", "surrogatepass")
    n = rng.choice([4095, 4096, 4097, 10_000, 30_000, 100_000])  # characters
    unit = rng.choice([b"x", b"Today ", "\u0301".encode(), "😀".encode(), b"\xff", b"ab\x00"])
    return unit * (n // len(unit.decode("utf-8", "replace")) + 1)


def control_values(vocab_size: int) -> dict:
    """name -> (draw a usual value, extreme valid values, invalid values)."""
    up, down = (float(np.nextafter(np.float32(1), np.float32(d))) for d in (2, 0))
    return dict(
        max_length=(lambda rng: rng.choice([0, 1, 2, 5, 10, 20, 40, rng.randint(0, 256)]),
                    [0, 512, 1000, CAP - 1, CAP], [-1, CAP + 1, 2**31 - 1, -(2**31), 10**6]),
        temperature=(lambda rng: rng.choice([0.0, 0.5, 0.8, 1.0, 1.3, rng.uniform(0, 3)]),
                     [-0.0, 1e-45, FLT_MIN, 1e-30, 1e-6, 100.0, 1e30, 3.4e38],
                     [-1e-6, -1.0, float("nan"), float("inf"), float("-inf"), -3.4e38]),
        top_k=(lambda rng: rng.choice([0, 0, 1, 5, 40]), [1, vocab_size - 1, vocab_size, vocab_size + 1, 2**31 - 1],
               [-1, -5, -(2**31)]),
        top_p=(lambda rng: rng.choice([1.0, 1.0, 0.9, rng.uniform(0.01, 1.0)]), [1e-45, FLT_MIN, 1e-30, 1e-6, down],
               [0.0, -0.0, -0.5, up, 2.0, float("nan"), float("inf"), float("-inf")]),
        seed=(lambda rng: rng.choice([0, rng.randint(1, 2**31)]), [2**63 - 1, -(2**63), -1, 2**32, 2**32 + 1, 1],
              []),  # every int64 is a valid seed
    )


def random_controls(rng: random.Random, batch: int, vocab_size: int) -> dict:
    """Usual controls (75% of calls), some extreme but valid ones (12%), or one or two
    invalid values (10%), or one control of another length than the batch (3%)."""
    values = control_values(vocab_size)
    mode = rng.choices(["usual", "extreme", "invalid", "mismatch"], [75, 12, 10, 3])[0]
    c = {name: [usual(rng) if mode != "extreme" or rng.random() > 0.3 else rng.choice(extreme)
                for _ in range(batch)] for name, (usual, extreme, _) in values.items()}
    if mode == "invalid" and batch:
        for _ in range(rng.choice([1, 1, 2])):
            name = rng.choice(["max_length", "temperature", "top_k", "top_p"])
            c[name][rng.randrange(batch)] = rng.choice(values[name][2])
    if mode == "mismatch":
        name = rng.choice(list(c))
        c[name] = c[name][:-1] if c[name] and rng.random() < 0.5 else c[name] + [values[name][0](rng)]
    return c


def random_case(rng: random.Random, vocab_size: int) -> tuple[str, list[bytes], dict | None]:
    signature = rng.choices(["generate", "serving_default", "score"], [70, 15, 15])[0]
    batch = rng.choices([0, 1, rng.randint(2, 8), rng.randint(9, 64), 256], [3, 40, 45, 10, 2])[0]
    prompts = [random_prompt(rng) for _ in range(batch)]
    if batch >= 64:  # large batches stay cheap: short prompts
        prompts = [p[:64] for p in prompts]
    controls = random_controls(rng, batch, vocab_size) if signature == "generate" else None
    return signature, prompts, controls


def known_cases() -> list[tuple[str, list[bytes], dict | None]]:
    """Run before the random ones: each once broke something, or is an edge worth pinning."""
    def gen(prompts, **kw):
        n = len(prompts)
        c = dict(max_length=[5] * n, temperature=[0.0] * n, top_k=[0] * n, top_p=[1.0] * n, seed=[0] * n)
        c.update({k: v if isinstance(v, list) else [v] * n for k, v in kw.items()})
        return ("generate", prompts, c)

    return [
        gen([b"a"], max_length=2**31 - 1),  # used to abort the process (std::bad_alloc): fixed in generate.py
        gen([b"a", b"b"], max_length=[3, 2**31 - 1]),
        gen([b"a"], max_length=-(2**31)),
        gen([b"a"], max_length=CAP, temperature=1.0, seed=2**63 - 1),
        gen([b"a"], temperature=float("nan")), gen([b"a"], temperature=float("inf")),
        gen([b"a"], top_p=float("nan")), gen([b"a"], top_p=1e-45), gen([b"a"], top_k=-(2**31)),
        gen([b"a"], top_k=2**31 - 1, temperature=1.0, seed=-(2**63)),
        gen([], max_length=[]), gen([], max_length=[1]), gen([b"a", b"b"], seed=[1]),
        gen([b"x" * 100_000, "\u0301".encode() * 100_000, b"\xff" * 100_000, b""], temperature=0.7, seed=3),
        ("score", [b"", b"x" * 100_000, b"\xed\xa0\x80\x00"], None),
        ("serving_default", [b"", "😀".encode() * 50_000], None),
        ("score", [], None), ("serving_default", [], None),
    ]


def bucket(max_length: int) -> str:
    for lo, hi in ((0, 0), (1, 16), (17, 128), (129, 512), (513, CAP)):
        if lo <= max_length <= hi:
            return f"{lo}-{hi}" if lo != hi else str(lo)
    return "invalid"


# -- one case ---------------------------------------------------------------------------------
def run_case(model: Model, signature: str, prompts: list[bytes], controls: dict | None,
             default_max_length: int, slack: float, rng: random.Random,
             row_step_s: float = 0.0) -> tuple[str, str, float, int]:
    """-> (outcome, detail, seconds, steps). outcome: ok | invalid_argument:<reason> |
    unexpected:<kind>."""
    batch = len(prompts)
    if signature == "generate":
        reasons = expected_errors(batch, controls)
        valid_lengths = [m for m in controls["max_length"] if 0 <= m <= CAP]
        steps = max(valid_lengths, default=0)
    else:
        reasons, steps = set(), ((default_max_length or CAP) if signature == "serving_default" else 0)
    prompt_steps = min(max((model.known(p) for p in prompts), default=0), MAX_PROMPT)
    bound = time_bound(steps, batch, prompt_steps, sum(map(len, prompts)), slack, row_step_s)
    faulthandler.dump_traceback_later(max(120.0, 20 * bound), exit=True)  # a hang aborts with a stack dump
    t0 = time.perf_counter()
    try:
        out = model.call(signature, prompts, controls)
        error = None
    except tf.errors.InvalidArgumentError as e:
        error = e
    except Exception as e:  # noqa: BLE001 - any other kind is the finding
        faulthandler.cancel_dump_traceback_later()
        return "unexpected:exception", f"{type(e).__name__}: {str(e)[:300]}", time.perf_counter() - t0, steps
    seconds = time.perf_counter() - t0
    faulthandler.cancel_dump_traceback_later()
    if seconds > bound:
        return "unexpected:slow", f"{seconds:.2f} s > bound {bound:.2f} s", seconds, steps
    if error is not None:
        message = error.message
        if not reasons and not maybe_flushed(controls or {"top_p": []}):
            return "unexpected:rejected_valid", message[:300], seconds, steps
        allowed = reasons | ({"top_p"} if maybe_flushed(controls or {"top_p": []}) else set())
        hit = sorted(r for r in allowed if MESSAGES[r] in message)
        if not hit:
            return "unexpected:wrong_message", f"expected one of {sorted(reasons)}: {message[:300]}", seconds, steps
        return f"invalid_argument:{hit[0]}", "", seconds, steps
    if reasons:
        return "unexpected:accepted_invalid", f"{sorted(reasons)} accepted", seconds, steps
    try:
        if signature == "score":
            check_score(model, prompts, out)
        else:
            lengths = controls["max_length"] if signature == "generate" else [default_max_length or CAP] * batch
            check_generate(model, prompts, lengths, out, exact=signature == "generate" or bool(default_max_length))
            if signature == "generate" and batch > 1 and rng.random() < 0.15:
                check_alone(model, prompts, controls, out, rng)
    except AssertionError as e:
        return "unexpected:contract", str(e)[:300], seconds, steps
    return "ok", "", seconds, steps


def check_alone(model: Model, prompts, controls, out, rng) -> None:
    """A seeded (or greedy) row gives the same text alone as inside its batch."""
    rows = [i for i in range(len(prompts)) if controls["seed"][i] != 0 or f32(controls["temperature"][i]) == 0]
    if not rows:
        return
    i = rng.choice(rows)
    alone = model.call("generate", [prompts[i]], {k: [v[i]] for k, v in controls.items()})
    assert alone["text"][0] == out["text"][i], (
        f"row {i} (seed {controls['seed'][i]}, temperature {controls['temperature'][i]}) differs alone")


def describe(signature, prompts, controls) -> dict:
    short = [p[:80] + (b"...(%d bytes)" % len(p) if len(p) > 80 else b"") for p in prompts[:8]]
    return {"signature": signature, "batch": len(prompts), "prompts": [repr(p) for p in short],
            "controls": {k: [repr(x) for x in v[:8]] for k, v in (controls or {}).items()}}


def fuzz(model: Model, cases: int, seed: int, default_max_length: int | None = None, slack: float = 1.0,
         log=print, progress=None) -> dict:
    """Runs ``cases`` cases; ``progress(summary)`` gets a partial summary every 1000 cases."""
    rng = random.Random(seed)
    for signature in ("serving_default", "generate", "score"):  # first calls optimize graphs: untimed
        model.call(signature, [b"Today "], None if signature != "generate" else
                   dict(max_length=[2], temperature=[0.5], top_k=[0], top_p=[1.0], seed=[1]))
    row_step_s = calibrate(model)
    outcomes, by_signature = collections.Counter(), collections.defaultdict(collections.Counter)
    slowest, failures = {}, []
    t_start = time.perf_counter()
    known = known_cases()
    for case in range(cases):
        signature, prompts, controls = known[case] if case < len(known) else random_case(rng, model.vocab_size)
        outcome, detail, seconds, steps = run_case(model, signature, prompts, controls, default_max_length,
                                                   slack, rng, row_step_s)
        outcomes[outcome] += 1
        by_signature[signature][outcome] += 1
        b = bucket(steps)
        if outcome == "ok" and seconds > slowest.get(b, {}).get("seconds", -1):
            slowest[b] = {"seconds": round(seconds, 4), "signature": signature, "batch": len(prompts),
                          "max_length": steps, "prompt_bytes": sum(map(len, prompts)), "case": case}
        if outcome.startswith("unexpected"):
            failures.append({"case": case, "outcome": outcome, "detail": detail,
                             **describe(signature, prompts, controls)})
            log(f"case {case}: {outcome}: {detail}: {json.dumps(describe(signature, prompts, controls))[:600]}")
        if (case + 1) % 1000 == 0:
            log(f"{case + 1} cases, {sum(v for k, v in outcomes.items() if k.startswith('unexpected'))} unexpected, "
                f"{time.perf_counter() - t_start:.0f} s")
            if progress and case + 1 < cases:
                progress(summarize(model, case + 1, seed, outcomes, by_signature, slowest, failures, t_start,
                                   slack, row_step_s, complete=False))
    return summarize(model, cases, seed, outcomes, by_signature, slowest, failures, t_start, slack, row_step_s)


def summarize(model, cases, seed, outcomes, by_signature, slowest, failures, t_start, slack, row_step_s,
              complete=True) -> dict:
    unexpected = sum(v for k, v in outcomes.items() if k.startswith("unexpected"))
    return {
        "model": model.path, "cases": cases, "complete": complete, "seed": seed, "unexpected": unexpected,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "by_signature": {k: dict(sorted(v.items())) for k, v in sorted(by_signature.items())},
        "slowest_ok_call_by_max_length": dict(sorted(slowest.items())),
        "time_bound": {"base_s": BASE_S, "min_per_step_s": PER_STEP_S, "per_input_byte_s": PER_BYTE_S,
                       "slack": slack, "row_step_factor": ROW_STEP_FACTOR,
                       "measured_row_step_s": row_step_s,
                       "steps": "max_length + known characters of the longest prompt (<= 4096)"},
        "failures": failures[:20],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a version directory or an export base (newest version)")
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--default-max-length", type=int,
                   help="the export's --default-max-length: serving_default rows must reach it or end "
                   "with <eos> (default: unknown, only the cap is checked)")
    p.add_argument("--time-slack", type=float, default=1.0, help="multiply every time bound (slow machines)")
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args(argv)
    model = Model(args.model)
    def write(summary):
        summary["environment"] = {"tensorflow": tf.__version__, "cpus": os.cpu_count()}
        text = json.dumps(summary, indent=2, ensure_ascii=False)
        if args.json:  # partial summaries too: a long run that is killed keeps what it found
            files.atomic_write_text(args.json, text + "\n")
        return text

    summary = fuzz(model, args.cases, args.seed, args.default_max_length, args.time_slack,
                   log=lambda *a: print(*a, file=sys.stderr, flush=True), progress=write)
    print(write(summary))
    return 1 if summary["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
