"""Data sources: one spec string -> a `tf.data.Dataset` of scalar tf.string examples.

    tfds:ag_news_subset/train        TFDS (the default); split slicing works: train[:90%]
    csv:PATH                         a CSV in the original AG News format
    csv:PATH[:6000]  csv:PATH[6000:] rows sliced the TFDS way (ints or percents)
    text:PATH                        plain UTF-8, one example per line (``text:PATH[a:b]``)

``field`` picks ``title``, ``description`` or ``title+description`` (joined with a space,
as the teaching example's extract_text does) for CSV and TFDS; text files are used whole.
``title|description`` joins them with U+001E, which the vocabulary reads as <eos>: each
example is then the title exactly as it is scored (ending in <eos>) followed by its
description as extra text of the same news. ``description_chars`` keeps only the first N
characters of descriptions.
AG News text (CSV and TFDS alike) is unescaped: ``\\n``-style escapes, the bare backslash
that stands for a line break, and ``#39;``/``&lt;``-style entities.
"""

from __future__ import annotations

import os
import re
import socket
from urllib.parse import urlparse

import tensorflow as tf

FIELDS = ("title", "description", "title+description", "title|description")
DEFAULT_TRAIN = "tfds:ag_news_subset/train"


class DataError(ValueError):
    """A data spec that cannot be read; the message is one line meant for the user."""


# AG News writes `&#39;` as ` #39;` (the `&` became a space) and `&lt;` as `&lt;`.
# Numeric entities 128-159 are Windows-1252 bytes, as the corpus was scraped.
_NUMERIC = {n: bytes([n]).decode("cp1252") for n in range(128, 160) if n not in (129, 141, 143, 144, 157)}
_NUMERIC.update({n: chr(n) for n in list(range(32, 127)) + list(range(160, 256)) + [8211, 8212, 8216, 8217, 8220, 8221, 8230]})
_NAMED = {"quot": '"', "amp": "&", "lt": "<", "gt": ">", "nbsp": " ", "apos": "'"}


def _escape_rewrite(s: str) -> str:
    return s.replace("\\", "\\\\")


def clean_agnews(text: tf.Tensor) -> tf.Tensor:
    """Undo AG News escaping with graph ops only (cheap: the dataset is cached after it)."""
    text = tf.strings.regex_replace(text, r"\\n", " ")
    text = tf.strings.regex_replace(text, r"\\\$", "$")
    text = tf.strings.regex_replace(text, r"\\", " ")
    for name, ch in _NAMED.items():
        text = tf.strings.regex_replace(text, rf"(?:&| ?){name};", _escape_rewrite(ch))
    # Only touch strings that still hold a numeric entity: most do not.
    def numeric(t):
        for n, ch in _NUMERIC.items():
            t = tf.strings.regex_replace(t, rf" ?&?#0*{n};", _escape_rewrite(ch))
        return t
    text = tf.cond(
        tf.strings.regex_full_match(text, r".*#[0-9]+;.*"), lambda: numeric(text), lambda: text
    )
    return tf.strings.strip(tf.strings.regex_replace(text, " {2,}", " "))


_SLICE = re.compile(r"^(?P<path>.*?)\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\]$")


def _split_slice(spec: str):
    m = _SLICE.match(spec)
    if not m:
        return spec, None, None
    return m["path"], m["start"], m["stop"]


def _resolve(bound, n):
    if bound is None:
        return None
    if bound.endswith("%"):
        return int(round(int(bound[:-1]) * n / 100))
    return int(bound)


def count(ds) -> int:
    """Number of elements of a finite dataset (one pass)."""
    return int(ds.reduce(tf.constant(0, tf.int64), lambda c, _: c + 1))


def _slice(ds, start, stop):
    if start is None and stop is None:
        return ds
    n = None
    if any(b is not None and (b.startswith("-") or b.endswith("%")) for b in (start, stop)):
        n = count(ds)
    a, b = _resolve(start, n), _resolve(stop, n)
    a = 0 if a is None else (a + n if a < 0 else a)
    if b is not None and b < 0:
        b += n
    ds = ds.skip(a)
    return ds if b is None else ds.take(max(b - a, 0))


def _require_file(path):
    if not os.path.isfile(path):
        raise DataError(f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise DataError(f"cannot read file: {path}")


def _pick(title, description, field, description_chars=0):
    if description_chars:
        description = tf.strings.substr(description, 0, description_chars, unit="UTF8_CHAR")
    if field == "title":
        return title
    if field == "description":
        return description
    return tf.strings.join([title, description], separator="\x1e" if field == "title|description" else " ")


def csv_dataset(path: str, field: str = "title", description_chars: int = 0) -> tf.data.Dataset:
    """AG News CSV rows (label, title, description) -> cleaned example strings."""
    _require_file(path)
    ds = tf.data.experimental.CsvDataset(
        path, record_defaults=[tf.string, tf.string, tf.string], use_quote_delim=True
    )
    # Clean each field before joining: cleaning must not see the U+001E separator as text.
    return ds.map(lambda _, t, d: _pick(clean_agnews(t), clean_agnews(d), field, description_chars))


def text_dataset(path: str) -> tf.data.Dataset:
    _require_file(path)
    return tf.data.TextLineDataset(path)


def _hosts_reachable(builder, timeout=3.0) -> list[str]:
    """Hosts of the builder's download URLs that cannot be reached (fast, no retries)."""
    hosts = {urlparse(u).hostname for u in (builder.url_infos or {})} - {None}
    bad = []
    for host in sorted(hosts):
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
        except OSError:
            bad.append(host)
    return bad


def tfds_dataset(name_split: str, field: str = "title", data_dir: str | None = None, description_chars: int = 0):
    """``ag_news_subset/train[:90%]`` -> cleaned example strings, downloading if needed."""
    import tensorflow_datasets as tfds  # heavy import: only when TFDS is asked for

    name, _, split = name_split.partition("/")
    split = split or "train"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name, bad version, ...
        raise DataError(f"tfds:{name_split}: {str(e).splitlines()[0]}") from None
    try:
        ds = builder.as_dataset(split=split)
    except AssertionError:  # not prepared yet: download first, but fail fast offline
        unreachable = _hosts_reachable(builder)
        if unreachable:
            raise DataError(
                f"tfds:{name_split} is not downloaded and {', '.join(unreachable)} cannot be "
                "reached (no network?); use csv:PATH (AG News CSV) or text:PATH (one example "
                "per line) instead, or download it once with network access"
            ) from None
        builder.download_and_prepare()
        ds = builder.as_dataset(split=split)
    except ValueError as e:  # bad split spec
        raise DataError(f"tfds:{name_split}: {str(e).splitlines()[0]}") from None

    def to_text(ex):
        if "title" in ex and "description" in ex:
            return _pick(clean_agnews(ex["title"]), clean_agnews(ex["description"]), field, description_chars)
        if "text" in ex:
            return ex["text"]
        raise DataError(f"tfds:{name_split}: examples have no title/description/text feature")

    return ds.map(to_text)


def load(spec: str, field: str = "title", tfds_data_dir: str | None = None,
         description_chars: int = 0) -> tf.data.Dataset:
    """Any data spec -> `tf.data.Dataset` of scalar tf.string examples."""
    if field not in FIELDS:
        raise DataError(f"--field must be one of {', '.join(FIELDS)}, got {field!r}")
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise DataError(f"data spec {spec!r} must look like tfds:NAME/SPLIT, csv:PATH or text:PATH")
    if kind == "tfds":
        return tfds_dataset(rest, field, tfds_data_dir, description_chars)
    path, start, stop = _split_slice(rest)
    if kind == "csv":
        return _slice(csv_dataset(path, field, description_chars), start, stop)
    if kind == "text":
        return _slice(text_dataset(path), start, stop)
    raise DataError(f"unknown data source {kind!r} in {spec!r}: use tfds:, csv: or text:")
