import pytest
import tensorflow as tf

from tfchargen.data.vocab import EOS, PAD, Vocabulary


@pytest.fixture()
def vocab(tmp_path):
    return Vocabulary.build(["Today is cold", "Zoë's café: 10€"], tmp_path)


def test_file_format_and_round_trip(vocab, tmp_path):
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == PAD and lines[-2] == EOS and lines[-1] == ""
    chars = lines[1:-2]
    assert chars == sorted(set("Today is coldZoë's café: 10€"))  # sorted by code point
    again = Vocabulary(str(tmp_path / "vocab.txt"))
    assert list(again.chars) == chars and again.chars == vocab.chars
    assert again.size == len(chars) + 2 and again.eos_id == len(chars) + 1


def test_both_tables(vocab):
    ids = vocab.encode(tf.constant(["café 10€", "Today"]))
    assert [vocab.decode_py(r) for r in ids.to_list()] == ["café 10€", "Today"]
    assert vocab.decode(ids).numpy().tolist() == ["café 10€".encode(), b"Today"]
    # Ids are line numbers: the first char in sorted order is id 1.
    assert vocab.encode(tf.constant([vocab.chars[0]])).to_list() == [[1]]
    # Code points, not bytes: a 3-byte character is one id.
    assert len(vocab.encode(tf.constant(["€"])).to_list()[0]) == 1


def test_unknown_characters_are_dropped_and_counted(vocab):
    text = tf.constant(["Tod😀ay", "QQQ", "日本"])
    assert vocab.decode(vocab.encode(text)).numpy().tolist() == [b"Today", b"", b""]
    assert vocab.count_unknown(text).numpy().tolist() == [1, 3, 2]


def test_invalid_utf8_is_replaced_not_fatal(vocab):
    bad = tf.constant([b"To\xff\xfeday", b"\xc3", b"\x80abc"])
    ids = vocab.encode(bad).to_list()
    assert vocab.decode_py(ids[0]) == "Today"  # U+FFFD is unknown -> dropped
    assert ids[1] == []
    assert vocab.decode_py(ids[2]) == "ac"  # 'b' is not in this vocabulary either
    assert vocab.count_unknown(bad).numpy()[0] == 2


def test_empty_string_and_empty_batch(vocab):
    assert vocab.encode(tf.constant([""])).to_list() == [[]]
    assert vocab.encode(tf.constant([], tf.string)).to_list() == []
    assert vocab.decode(tf.zeros([0, 3], tf.int32)).shape == (0,)


def test_control_whitespace_becomes_space(vocab):
    ids = vocab.encode(tf.constant(["is\tcold\nToday\u2028is"]))
    assert vocab.decode_py(ids.to_list()[0]) == "is cold Today is"


def test_pad_and_eos_decode_to_nothing(vocab):
    ids = vocab.encode(tf.constant(["cold"])).to_tensor()
    padded = tf.concat([ids, [[vocab.eos_id, 0, 0]]], axis=1)
    assert vocab.decode(padded).numpy().tolist() == [b"cold"]


def test_rejects_non_vocabulary_files(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a tfchargen vocabulary"):
        Vocabulary(str(p))
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.build(["", ""], tmp_path / "empty")
