import time

import pytest
import tensorflow_datasets as tfds
from helpers import DATA, HELDOUT, TRAIN

from tfchargen.data import sources


def texts(ds):
    return [t.decode() for t in ds.as_numpy_iterator()]


def test_csv_row_slicing_follows_the_convention(data_path):
    train, held = texts(sources.load(TRAIN)), texts(sources.load(HELDOUT))
    assert len(train) == 6000 and len(held) == 1600
    assert train[0] == "Fears for T N pension after talks"
    assert len(texts(sources.load(f"csv:{DATA}[-10%:]"))) == 760
    assert texts(sources.load(f"csv:{DATA}[5999:6001]")) == [train[-1], held[0]]


def test_agnews_escapes_are_undone(data_path):
    allt = texts(sources.load(f"csv:{DATA}", "title+description"))
    joined = "\n".join(allt)
    for escaped in ("#39;", "#36;", "quot;", "&lt;", "&gt;", "\\"):
        assert escaped not in joined, escaped
    assert "Eriksson doesn't feel any extra pressure following scandal" in joined
    assert "Man Sought $50M From McGreevey, Aides Say (AP)" in joined


def test_fields(data_path):
    t = texts(sources.load(f"csv:{DATA}[1:2]", "title"))[0]
    d = texts(sources.load(f"csv:{DATA}[1:2]", "description"))[0]
    both = texts(sources.load(f"csv:{DATA}[1:2]", "title+description"))[0]
    assert both == f"{t} {d}" and t.startswith("The Race is On") and d.startswith("SPACE.com")


def test_text_source_with_slicing(tmp_path):
    p = tmp_path / "lines.txt"
    p.write_text("one\ntwo\nthree\nfour\n", encoding="utf-8")
    assert texts(sources.load(f"text:{p}")) == ["one", "two", "three", "four"]
    assert texts(sources.load(f"text:{p}[1:3]")) == ["two", "three"]
    assert texts(sources.load(f"text:{p}[-1:]")) == ["four"]
    assert texts(sources.load(f"text:{p}[:50%]")) == ["one", "two"]


@pytest.mark.parametrize("spec,match", [
    ("csv:/nonexistent/file.csv", "no such file"),
    ("text:/nonexistent.txt[1:]", "no such file"),
    ("nope:foo", "unknown data source"),
    ("justapath.csv", "must look like"),
])
def test_bad_specs_are_clear_errors(spec, match):
    with pytest.raises(sources.DataError, match=match):
        sources.load(spec)


def test_tfds_path_with_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        got = texts(sources.load("tfds:ag_news_subset/train", "title+description"))
        sliced = texts(sources.load("tfds:ag_news_subset/train[:50%]", "title"))
    assert len(got) == 12 and all(isinstance(t, str) and t for t in got)
    # mock_data ignores the slice itself; this checks the split string reaches TFDS intact.
    assert sliced and all(" " not in t or t.strip() == t for t in sliced)


def test_tfds_offline_fails_fast_with_alternatives(tmp_path):
    t0 = time.monotonic()
    try:
        sources.load("tfds:ag_news_subset/train", tfds_data_dir=str(tmp_path))
    except sources.DataError as e:
        msg = str(e)
    else:
        pytest.skip("this machine can reach the TFDS download host")
    assert time.monotonic() - t0 < 30
    assert "\n" not in msg and "csv:PATH" in msg and "text:PATH" in msg
