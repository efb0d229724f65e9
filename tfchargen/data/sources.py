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

CSV files hold one record per line (AG News escapes its line breaks); blank lines are
skipped. A malformed row (not 3 fields, a quote that is not closed or not escaped, a label
that is not a number) is found graph-natively in one pass over the file when it is loaded:
``bad_rows="error"`` (the default) raises a one-line DataError naming the file and line,
``bad_rows="skip"`` drops such rows and warns once on stderr with their count. A spec that
yields no example at all is a DataError too.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import sys
from urllib.parse import urlparse

import tensorflow as tf

from tfchargen.config import (
    BAD_ROWS,
    DEFAULT_TRAIN,  # noqa: F401  (re-exported: the data spec a bare `train` reads)
    FIELDS,
)


class DataError(ValueError):
    """A data spec that cannot be read; the message is one line meant for the user."""


# AG News writes `&#39;` as ` #39;` (the `&` became a space) and `&lt;` as `&lt;`.
# Numeric entities 128-159 are Windows-1252 bytes, as the corpus was scraped.
_NUMERIC = {n: bytes([n]).decode("cp1252") for n in range(128, 160) if n not in (129, 141, 143, 144, 157)}
_NUMERIC.update({n: chr(n) for n in [*range(32, 127), *range(160, 256), 8211, 8212, 8216, 8217, 8220, 8221, 8230]})
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
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory, not a file")
    if not os.path.exists(path):
        raise DataError(f"no such file: {path}")
    if not os.path.isfile(path):
        raise DataError(f"{path} is not a regular file")
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


# One CSV field as tf.io.decode_csv(use_quote_delim=True) reads it: "quoted, with "" inside"
# or unquoted without quotes or commas. RE2 syntax (tf.strings.regex_full_match).
_CSV_FIELD = r'(?:"(?:[^"]|"")*"|[^",]*)'
_CSV_FIELDS = rf"{_CSV_FIELD}(?:,{_CSV_FIELD})*"
_CSV_ROW = rf'(?:"[0-9]+"|[0-9]+),{_CSV_FIELD},{_CSV_FIELD}'
_CSV_COLUMNS = 3
# Row status codes (graph-side) and what they mean to the user.
OK, BLANK, WRONG_FIELDS, BAD_QUOTES, BAD_LABEL = range(5)
_REASONS = {WRONG_FIELDS: "expected 3 fields (label,title,description), got {fields}",
            BAD_QUOTES: "a quote is not closed, or not escaped as \"\"",
            BAD_LABEL: "the label (first field) {label} is not a number"}


def _reason(line: bytes, status: int, fields: int) -> str:
    label = next(csv.reader([line.decode("utf-8", "replace")]), [""])[0] if status == BAD_LABEL else ""
    return _REASONS[status].format(fields=fields, label=repr(label[:40]))


def csv_row_status(line: tf.Tensor):
    """[...] raw CSV lines -> (status, number of fields), both int32, graph ops only."""
    text = tf.strings.unicode_transcode(line, "UTF-8", "UTF-8", errors="replace")  # RE2 needs UTF-8
    well_formed = tf.strings.regex_full_match(text, _CSV_FIELDS)
    unquoted = tf.strings.regex_replace(text, r'"(?:[^"]|"")*"', "")
    fields = tf.strings.length(tf.strings.regex_replace(unquoted, "[^,]", "")) + 1
    status = tf.where(
        tf.strings.length(tf.strings.strip(text)) == 0, BLANK,
        tf.where(tf.strings.regex_full_match(text, _CSV_ROW), OK,
                 tf.where(~well_formed, BAD_QUOTES,
                          tf.where(fields != _CSV_COLUMNS, WRONG_FIELDS, BAD_LABEL))))
    return status, fields


def _warn(message: str) -> None:
    print(f"tfchargen: warning: {message}", file=sys.stderr, flush=True)


def _csv_lines(path: str, bad_rows: str, warn=_warn) -> tf.data.Dataset:
    """The well-formed record lines of ``path``; malformed rows raise or are skipped."""
    if bad_rows not in BAD_ROWS:
        raise DataError(f"--bad-rows must be one of {', '.join(BAD_ROWS)}, got {bad_rows!r}")
    numbered = tf.data.TextLineDataset(path).enumerate(start=1)  # (line number, line)
    rows = numbered.batch(4096).map(lambda n, line: (n, line, *csv_row_status(line))).unbatch()
    bad = rows.filter(lambda n, line, status, fields: status >= WRONG_FIELDS)
    try:
        first = next(iter(bad.take(1)), None)  # one pass over the file, graph-native
    except tf.errors.OpError as e:  # unreadable mid-way, not a regular file, ...
        raise DataError(f"cannot read {path}: {e.message.splitlines()[0]}") from None
    if first is not None:
        n, line, status, fields = int(first[0]), first[1].numpy(), int(first[2]), int(first[3])
        reason = _reason(line, status, fields)
        if bad_rows == "error":
            raise DataError(f"{path} line {n}: {reason} (--bad-rows skip skips malformed rows)")
        total = count(bad)
        warn(f"skipped {total} malformed row{'s' * (total != 1)} of {path} (the first: line {n}: {reason})")
    return rows.filter(lambda n, line, status, fields: status == OK).map(lambda n, line, *_: line)


def csv_dataset(path: str, field: str = "title", description_chars: int = 0, bad_rows: str = "error",
                start: str | None = None, stop: str | None = None) -> tf.data.Dataset:
    """AG News CSV rows (label, title, description) -> cleaned example strings.

    ``start``/``stop`` slice the well-formed rows (TFDS-style bounds) before they are parsed."""
    _require_file(path)
    records = _slice(_csv_lines(path, bad_rows), start, stop).batch(1024).map(
        lambda lines: tf.io.decode_csv(lines, [""] * _CSV_COLUMNS, use_quote_delim=True)).unbatch()
    # Clean each field before joining: cleaning must not see the U+001E separator as text.
    return records.map(lambda _, t, d: _pick(clean_agnews(t), clean_agnews(d), field, description_chars))


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


def _nonempty(ds: tf.data.Dataset, spec: str) -> tf.data.Dataset:
    try:
        empty = next(iter(ds.take(1)), None) is None
    except tf.errors.OpError as e:  # e.g. a directory or a file that went away
        raise DataError(f"cannot read {spec}: {e.message.splitlines()[0]}") from None
    if empty:
        raise DataError(f"{spec}: no examples (an empty file or an empty slice)")
    return ds


def load(spec: str, field: str = "title", tfds_data_dir: str | None = None,
         description_chars: int = 0, bad_rows: str = "error") -> tf.data.Dataset:
    """Any data spec -> `tf.data.Dataset` of scalar tf.string examples (never empty)."""
    if field not in FIELDS:
        raise DataError(f"--field must be one of {', '.join(FIELDS)}, got {field!r}")
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise DataError(f"data spec {spec!r} must look like tfds:NAME/SPLIT, csv:PATH or text:PATH")
    if kind == "tfds":
        return _nonempty(tfds_dataset(rest, field, tfds_data_dir, description_chars), spec)
    path, start, stop = _split_slice(rest)
    if kind == "csv":
        return _nonempty(csv_dataset(path, field, description_chars, bad_rows, start, stop), spec)
    if kind == "text":
        return _nonempty(_slice(text_dataset(path), start, stop), spec)
    raise DataError(f"unknown data source {kind!r} in {spec!r}: use tfds:, csv: or text:")
