"""Character vocabulary: the one string <-> id boundary of tfchargen.

File format (``vocab.txt``, UTF-8, one entry per line, line number = id):

    line 0        <pad>     padding, never a target, never sampled
    lines 1..N    the distinct characters of the training text, sorted by code point
    line N+1      <eos>     end of sequence: the last target of every example

Rules every stage shares (training, evaluation, the exported SavedModel):

* Text is handled as Unicode code points, never bytes. Invalid UTF-8 is replaced by
  U+FFFD before anything else, so no input can crash the lookup.
* Line-breaking and control whitespace (``\\t \\n \\r \\v \\f``, U+0085, U+2028, U+2029)
  becomes a plain space: one example is one line, and the vocabulary file stays one
  entry per line in any language's line reader.
* A character that is not in the vocabulary is **dropped** from the model's input (and
  so is not scored by evaluation; ``evaluate`` reports how many were dropped). It is
  never mapped to padding and never crashes.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfchargen.common import files

PAD = "<pad>"
EOS = "<eos>"
PAD_ID = 0
FILENAME = "vocab.txt"  # in a run dir and among a SavedModel's assets
# U+001E RECORD SEPARATOR inside a text marks an <eos> boundary within one example
# (e.g. "title<RS>description": the title is learnt exactly as it is scored, ending in
# <eos>, and the description continues after it). It is never a vocabulary character.
SEGMENT_SEPARATOR = "\x1e"

# RE2 class of characters that become a plain space (see module docstring).
_SPACE_LIKE = r"[\t\n\r\x0B\x0C\x{0085}\x{2028}\x{2029}]"
_REPLACEMENT_CHAR = 0xFFFD


def normalize(text: tf.Tensor) -> tf.Tensor:
    """Valid UTF-8 with control whitespace turned into spaces (any shape of tf.string)."""
    text = tf.strings.unicode_transcode(
        text, "UTF-8", "UTF-8", errors="replace", replacement_char=_REPLACEMENT_CHAR
    )
    return tf.strings.regex_replace(text, _SPACE_LIKE, " ")


def normalize_py(text: str) -> str:
    """The Python twin of :func:`normalize`, for building the vocabulary."""
    for ch in "\t\n\r\x0b\x0c\x85\u2028\u2029":
        text = text.replace(ch, " ")
    return text


class Vocabulary(tf.Module):
    """Character vocabulary with `tf.lookup.StaticHashTable`s in both directions.

    Args:
        path: a ``vocab.txt`` file in the format of this module's docstring.

    Example:
    >>> import tempfile
    >>> v = Vocabulary.build(["Today ", "Tomorrow"], tempfile.mkdtemp())
    >>> v.encode(tf.constant(["Tod"])).to_list()
    [[2, 6, 4]]
    """

    def __init__(self, path: str):
        super().__init__(name="vocabulary")  # a tf.Module: exports track its tables and asset
        self.path = path
        with open(path, encoding="utf-8") as f:
            entries = f.read().split("\n")
        if entries and entries[-1] == "":
            entries.pop()
        if len(entries) < 2 or entries[0] != PAD or entries[-1] != EOS:
            raise ValueError(
                f"{path}: not a tfchargen vocabulary (first line must be {PAD}, last {EOS})"
            )
        bad = [e for e in entries[1:-1] if len(e) != 1]
        if bad:
            raise ValueError(f"{path}: entries must be single characters, got {bad[:3]!r}")
        self.chars = tuple(entries[1:-1])
        self.size = len(entries)
        self.eos_id = len(entries) - 1
        # Both tables read the same file: line number <-> whole line.
        self.char_to_id = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                path,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            default_value=-1,
        )
        self.id_to_char = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                path,
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            ),
            default_value="",
        )

    @classmethod
    def build(cls, texts, directory: str) -> "Vocabulary":
        """Writes ``directory/vocab.txt`` from an iterable of str/bytes and loads it."""
        chars: set[str] = set()
        for t in texts:
            if isinstance(t, bytes):
                t = t.decode("utf-8", errors="replace")
            chars.update(normalize_py(t))
        chars.discard("")
        chars.discard(SEGMENT_SEPARATOR)
        if not chars:
            raise ValueError("cannot build a vocabulary: the training text is empty")
        path = os.path.join(directory, FILENAME)
        files.atomic_write_text(path, "\n".join([PAD, *sorted(chars), EOS]) + "\n")  # never half a file
        return cls(path)

    def chars_of(self, text: tf.Tensor) -> tf.RaggedTensor:
        """[B] strings -> [B, (chars)] one-character strings, after normalization."""
        return tf.strings.unicode_split(normalize(text), "UTF-8", errors="replace")

    def encode(self, text: tf.Tensor) -> tf.RaggedTensor:
        """[B] strings -> [B, (len)] int32 ids; unknown characters are dropped, U+001E -> <eos>."""
        # On the flat characters, then one ragged tensor from row splits: the ragged forms of
        # where and boolean_mask add hundreds of graph nodes to every call of a signature.
        chars = self.chars_of(text)
        flat = chars.flat_values
        ids = tf.where(flat == SEGMENT_SEPARATOR, tf.cast(self.eos_id, tf.int64), self.char_to_id.lookup(flat))
        known = ids >= 0
        kept_before = tf.concat([[0], tf.cumsum(tf.cast(known, tf.int64))], 0)  # known ids before each position
        return tf.RaggedTensor.from_row_splits(tf.cast(tf.boolean_mask(ids, known), tf.int32),
                                               tf.gather(kept_before, chars.row_splits), validate=False)

    def count_unknown(self, text: tf.Tensor) -> tf.Tensor:
        """Number of characters per string that the vocabulary does not know."""
        chars = self.chars_of(text)
        ids = tf.ragged.map_flat_values(self.char_to_id.lookup, chars)
        return tf.reduce_sum(tf.cast((ids < 0) & (chars != SEGMENT_SEPARATOR), tf.int32), axis=-1)

    def decode(self, ids) -> tf.Tensor:
        """[B, T] (dense or ragged) ids -> [B] strings; pad and eos decode to nothing."""
        ids = tf.cast(ids, tf.int64)
        keep = (ids > PAD_ID) & (ids < self.eos_id)
        if not isinstance(ids, tf.RaggedTensor):  # dense (generation): a few ops, no ragged ones
            return tf.strings.reduce_join(tf.where(keep, self.id_to_char.lookup(ids), ""), axis=-1)
        ids = tf.ragged.boolean_mask(ids, keep)
        chars = tf.ragged.map_flat_values(self.id_to_char.lookup, ids)
        return tf.strings.reduce_join(chars, axis=-1)

    def decode_py(self, ids) -> str:
        """One sequence of ids -> str in plain Python (tests, reference code)."""
        return "".join(self.chars[i - 1] for i in np.asarray(ids).tolist() if 0 < i < self.eos_id)
