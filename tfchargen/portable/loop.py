"""The host loop of a portable export, in NumPy: sampling rule "tfchargen-sampling-1".

    prompts --normalize, split, look up--> ids --step over each prompt--> log_probs, states
    --(pick, step) x max_length--> ids --decode--> texts

It gives the SavedModel ``generate`` signature's text for greedy and seeded rows: the same
steps as generation/generator.py (prompt_ids, the loop, _outputs) and sampling.py (TopK,
TopP, Categorical's seeded draw: row_key, seeded_uniform, inverse_cdf), every float in
float32 and every hash in uint32 as there. The model's own float rounding differs between
runtimes, so a near-tie can still fall the other way (docs/other-languages.md gives how
often). Unseeded rows (seed 0) draw from NumPy's generator seeded from fresh entropy.

A ``runtime`` is any object with ``manifest`` (manifest.json as a dict),
``zero_states(batch)`` and ``step(ids [B] int32, states) -> (log_probs [B, V], states)``
(litert.Runtime). No TensorFlow here.
"""

from __future__ import annotations

import numpy as np

from tfchargen import contract

NEG_INF = np.float32(-np.inf)
_GOLDEN = np.uint32(0x9E3779B9)  # sampling._GOLDEN
_U24 = np.float32(1.0 / (1 << 24))


# -- the seeded draw (sampling.py's, on uint32 / float32 arrays) -------------------------------
def _mix32(x):
    """lowbias32, as sampling._mix32 (uint32 arithmetic wraps modulo 2**32)."""
    x = np.asarray(x, np.uint32)
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def row_key(seed) -> np.ndarray:
    """[B] uint32 from [B] int64 seeds: sampling.row_key (low word ^ mix(high word + golden))."""
    words = np.atleast_1d(np.asarray(seed, np.int64)).astype("<i8").view("<u4").reshape(-1, 2)
    return _mix32(words[:, 0] ^ _mix32(words[:, 1] + _GOLDEN))


def seeded_uniform(key, step) -> np.ndarray:
    """[B] float32 in (0, 1], multiples of 2**-24: sampling.seeded_uniform."""
    key = np.atleast_1d(np.asarray(key, np.uint32))
    x = _mix32(key + np.asarray(step, np.int64).astype(np.uint32) * _GOLDEN)
    return ((x >> np.uint32(8)).astype(np.float32) + np.float32(1.0)) * _U24


def inverse_cdf(scaled, u) -> np.ndarray:
    """[B] int32: per row the first id whose cumulative probability reaches u (sampling.inverse_cdf)."""
    scaled = np.asarray(scaled, np.float32)
    u = np.asarray(u, np.float32)
    with np.errstate(invalid="ignore"):
        mass = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    cdf = np.cumsum(mass, axis=-1, dtype=np.float32)
    below = np.sum(cdf < u[:, None] * cdf[:, -1:], axis=-1)
    ids = np.minimum(below, scaled.shape[1] - 1)
    ok = mass[np.arange(len(ids)), ids] > 0
    return np.where(ok, ids, np.argmax(scaled, axis=-1)).astype(np.int32)


def _sort_desc(x):
    return -np.sort(-x, axis=-1)


def top_k(log_probs, k) -> np.ndarray:
    """sampling.TopK: keeps each row's k likeliest (ties with the k-th kept); k <= 0 keeps all."""
    log_probs = np.asarray(log_probs, np.float32)
    k = np.minimum(np.asarray(k, np.int64), log_probs.shape[1])
    kth = np.take_along_axis(_sort_desc(log_probs), np.maximum(k - 1, 0)[:, None], axis=1)
    keep = (log_probs >= kth) | (k[:, None] <= 0)
    return np.where(keep, log_probs, NEG_INF)


def softmax(x) -> np.ndarray:
    """float32 softmax over the last axis (exp of the max-shifted values over their sum)."""
    with np.errstate(invalid="ignore"):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True, dtype=np.float32)


def top_p(log_probs, p) -> np.ndarray:
    """sampling.TopP: keeps the likeliest characters until the mass before one reaches p
    (renormalized over what is left); p >= 1 keeps all."""
    log_probs = np.asarray(log_probs, np.float32)
    p = np.asarray(p, np.float32)
    s = _sort_desc(log_probs)
    probs = softmax(s)
    through = np.cumsum(probs, axis=-1, dtype=np.float32)
    before = np.concatenate([np.zeros_like(through[:, :1]), through[:, :-1]], axis=1)  # exclusive cumsum
    kept = before < p[:, None]
    threshold = np.min(np.where(kept, s, np.float32(np.inf)), axis=-1, keepdims=True)
    keep = (log_probs >= threshold) | (p[:, None] >= 1.0)
    return np.where(keep, log_probs, NEG_INF)


# -- strings <-> ids (vocab.py's rules, from the manifest) --------------------------------------
class Vocab:
    """A manifest's vocabulary and text rules (data/vocab.py's, without TensorFlow)."""

    def __init__(self, manifest: dict):
        self.entries = list(manifest["vocabulary"])
        self.pad_id, self.eos_id = manifest["pad_id"], manifest["eos_id"]
        self.separator = manifest["segment_separator"]
        self.max_prompt_chars = manifest["max_prompt_chars"]
        self._space = str.maketrans({c: " " for c in manifest["space_like"]})
        # Only single characters are looked up: "<pad>" and "<eos>" can never match one.
        self.ids = {c: i for i, c in enumerate(self.entries) if len(c) == 1 and i not in (self.pad_id, self.eos_id)}

    @property
    def size(self) -> int:
        return len(self.entries)

    def normalize(self, text) -> str:
        """vocab.normalize: invalid UTF-8 (and lone surrogates) -> U+FFFD, space-like -> " "."""
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", errors="replace")
        else:
            text = text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
        return text.translate(self._space)

    def encode(self, normalized: str) -> list:
        """Ids of a normalized text: U+001E -> <eos>, unknown characters dropped."""
        eos, ids = self.eos_id, self.ids
        return [eos if c == self.separator else ids[c] for c in normalized if c == self.separator or c in ids]

    def count_unknown(self, text) -> int:
        """Characters of a text (after normalization) that the vocabulary does not know."""
        return sum(1 for c in self.normalize(text) if c != self.separator and c not in self.ids)

    def prompt_ids(self, normalized: str) -> list:
        """Generator.prompt_ids: the last max_prompt_chars ids; an empty prompt is [<eos>]."""
        return self.encode(normalized)[-self.max_prompt_chars:] or [self.eos_id]

    def decode(self, ids) -> str:
        """pad and <eos> decode to nothing."""
        return "".join(self.entries[i] for i in np.asarray(ids).tolist() if self.pad_id < i < self.eos_id)


# -- the loop -----------------------------------------------------------------------------------
def prefill(runtime, id_lists):
    """Steps each row over its ids from zero states: (log_probs after each row's last id,
    states there). Rows shorter than the longest keep theirs once their ids end."""
    n = len(id_lists)
    lengths = np.array([len(ids) for ids in id_lists])
    padded = np.zeros([n, int(lengths.max()) if n else 0], np.int32)
    for r, ids in enumerate(id_lists):
        padded[r, :len(ids)] = ids
    states = runtime.zero_states(n)
    log_probs = None
    for t in range(padded.shape[1]):
        lp, new = runtime.step(padded[:, t], states)
        live = (t < lengths)[:, None]
        if live.all():
            log_probs, states = lp, new
        else:
            log_probs = lp if log_probs is None else np.where(live, lp, log_probs)
            states = [np.where(live, a, b) for a, b in zip(new, states)]
    return log_probs, states


def generate(runtime, prompts, controls: contract.Controls = contract.Controls(), rng=None) -> dict:
    """The SavedModel's ``generate`` over a LiteRT (or any) runtime: one row per prompt
    (str or UTF-8 bytes), per-row ``controls`` (contract.Controls: scalars or one value per
    prompt; checked as the graph checks them, ValueError with its message).

    -> {"text", "continuation": [bytes], "num_chars": int32 [B], "ended_with_eos": bool [B],
    "log_prob": float32 [B]}, as call(loaded, "generate", ...) returns them.
    """
    vocab = Vocab(runtime.manifest)
    n = len(prompts)
    rows = controls.check().rows(n)
    max_length = np.asarray(rows["max_length"], np.int64)
    temperature = np.asarray(rows["temperature"], np.float32)
    k, p = np.asarray(rows["top_k"], np.int64), np.asarray(rows["top_p"], np.float32)
    seed = np.asarray(rows["seed"], np.int64)
    normalized = [vocab.normalize(x) for x in prompts]
    if n == 0:
        return _outputs(vocab, [], np.zeros([0, 0], np.int32), np.zeros([0], np.float32))
    log_probs, states = prefill(runtime, [vocab.prompt_ids(t) for t in normalized])

    sampled = temperature > 0
    seeded, unseeded = sampled & (seed != 0), sampled & (seed == 0)
    inv_temperature = np.where(sampled, np.float32(1.0) / np.where(sampled, temperature, np.float32(1.0)),
                               np.float32(1.0)).astype(np.float32)
    key = row_key(seed)
    if unseeded.any() and rng is None:
        rng = np.random.default_rng()  # fresh entropy: new in every process and call
    done = max_length <= 0
    steps = int(min(max(int(max_length.max()), 0), contract.MAX_NEW_CHARS))
    new_ids = np.zeros([n, steps], np.int32)
    log_prob = np.zeros([n], np.float32)
    everyone = np.arange(n)
    i = 0
    while i < steps and not done.all():
        allowed = log_probs.copy()
        allowed[:, vocab.pad_id] = NEG_INF  # padding is never a candidate
        nxt = np.argmax(allowed, axis=-1).astype(np.int32)
        draw = np.nonzero(sampled & ~done)[0]
        if len(draw):
            f = allowed[draw]
            if (k[draw] > 0).any():  # each filter sorts [B, V]: only when some row asks for it
                f = top_k(f, k[draw])
            if (p[draw] < 1).any():
                f = top_p(f, p[draw])
            u = np.empty(len(draw), np.float32)
            s = seeded[draw]
            u[s] = seeded_uniform(key[draw][s], i)
            if not s.all():  # unseeded rows: 24 fresh bits, as seeded_uniform's
                u[~s] = (rng.integers(0, 1 << 24, int((~s).sum())) + 1).astype(np.float32) * _U24
            nxt[draw] = inverse_cdf(f * inv_temperature[draw, None], u)
        active = ~done
        nxt = np.where(active, nxt, 0).astype(np.int32)
        log_prob = (log_prob + np.where(active, log_probs[everyone, nxt], np.float32(0.0))).astype(np.float32)
        done = done | (nxt == vocab.eos_id) | (i + 1 >= max_length)
        new_ids[:, i] = nxt
        i += 1
        if not done.all():
            log_probs, states = runtime.step(nxt, states)
    return _outputs(vocab, normalized, new_ids[:, :i], log_prob)


def _outputs(vocab, normalized, new_ids, log_prob) -> dict:
    continuations = [vocab.decode(row) for row in new_ids]
    return {
        "text": [(t + c).encode("utf-8") for t, c in zip(normalized, continuations)],
        "continuation": [c.encode("utf-8") for c in continuations],
        "num_chars": np.sum((new_ids > vocab.pad_id) & (new_ids != vocab.eos_id), axis=1).astype(np.int32),
        "ended_with_eos": np.any(new_ids == vocab.eos_id, axis=1),
        "log_prob": log_prob,
    }


def score(runtime, texts) -> dict:
    """Per text (str or bytes): the SavedModel ``score`` signature's outputs. The same targets
    as training and ``evaluate``: n known characters give n targets (the n-1 next characters
    and <eos>); an empty text scores 0 characters.

    -> {"nats_per_char": float32 [B], "log_prob": float32 [B], "num_chars": int32 [B]}.
    """
    vocab = Vocab(runtime.manifest)
    id_lists = [vocab.encode(vocab.normalize(t))[-vocab.max_prompt_chars:] for t in texts]
    n = len(id_lists)
    lengths = np.array([len(ids) for ids in id_lists], np.int64)
    width = int(lengths.max()) if n else 0
    inputs = np.zeros([n, width], np.int32)
    targets = np.zeros([n, width], np.int64)
    for r, ids in enumerate(id_lists):
        inputs[r, :len(ids)] = ids
        targets[r, :len(ids)] = ids[1:] + [vocab.eos_id]
    total = np.zeros([n], np.float64)
    states = runtime.zero_states(n)
    for t in range(width):
        live = t < lengths
        log_probs, states = runtime.step(inputs[:, t], states)
        total -= np.where(live, log_probs[np.arange(n), targets[:, t]], 0.0)
    count = lengths.astype(np.int32)
    return {"nats_per_char": (total / np.maximum(count, 1)).astype(np.float32),
            "log_prob": (-total).astype(np.float32), "num_chars": count}
