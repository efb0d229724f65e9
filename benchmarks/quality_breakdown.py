"""Where a trained run's held-out nats go: per target character, by the word it is in.

Every held-out target is put in one class: a character of a word the training titles
contain, of a word only the training descriptions contain, or of a word in neither
(each split into the word's first character and the rest), a space or punctuation, or
<eos>. Words are \\w+ runs, compared case-insensitively. The table says how much of the
loss each class holds, and so how much any one remedy can win: e.g. if description text
taught its words as well as the titles teach theirs, the "descriptions only" rows would
cost what the "train titles" rows cost.

    python benchmarks/quality_breakdown.py --run-dir runs/agnews   # -> benchmarks/results/quality_breakdown.json

Nothing here is asserted; the overall figure equals `tfchargen evaluate`'s on the same data.
"""

from __future__ import annotations

import argparse
import collections
import os
import re

import common  # next to this script
import tensorflow as tf

from tfchargen.data import sources
from tfchargen.data.vocab import normalize_py
from tfchargen.training import rundir

WORD = re.compile(r"\w+")


def texts(spec: str, field: str) -> list[str]:
    return [t.decode("utf-8") for t in sources.load(spec, field).as_numpy_iterator()]


def word_classes(text: str, title_words: set, description_words: set) -> list[str]:
    """The class of each character of ``text`` (as it is scored: the target at position j)."""
    classes = ["space/punct"] * len(text)
    for m in WORD.finditer(text):
        w = m.group().lower()
        where = ("train titles" if w in title_words
                 else "train descriptions only" if w in description_words else "neither")
        for j in range(m.start(), m.end()):
            classes[j] = f"word in {where}: " + ("first char" if j == m.start() else "rest")
    return classes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, help="a finished `tfchargen train` run")
    p.add_argument("--data", default=common.DEFAULT_DATA, help="AG News CSV (default: %(default)s)")
    p.add_argument("--train-rows", type=int, default=common.TRAIN_ROWS, help="rows 1..N train, the rest is held out")
    p.add_argument("--score", choices=("held-out", "train"), default="held-out",
                   help="which titles to score: held-out, or the training titles themselves (how well "
                        "the model fits what it saw)")
    p.add_argument("--out", default=common.result_path(__file__), help="JSON results (default: %(default)s)")
    args = p.parse_args(argv)

    cfg, vocab, rnn = rundir.load_trained(args.run_dir)
    known = set(vocab.chars)
    train_spec, held_spec = f"csv:{args.data}[:{args.train_rows}]", f"csv:{args.data}[{args.train_rows}:]"
    title_words = {w.lower() for t in texts(train_spec, "title") for w in WORD.findall(t)}
    description_words = {w.lower() for t in texts(train_spec, "description") for w in WORD.findall(t)}
    # Score the text as the model sees it: normalized, unknown characters dropped (vocab.py).
    scored = held_spec if args.score == "held-out" else train_spec
    scored_titles = ["".join(c for c in normalize_py(t) if c in known) for t in texts(scored, "title")]
    scored_titles = [t for t in scored_titles if t]

    nats, count = collections.defaultdict(float), collections.Counter()
    for start in range(0, len(scored_titles), 64):
        chunk = scored_titles[start:start + 64]
        ids = vocab.encode(tf.constant(chunk)).to_tensor()
        lengths = [len(t) for t in chunk]
        # Targets: the inputs shifted by one, <eos> after each text's last character.
        targets = tf.concat([ids[:, 1:], tf.zeros_like(ids[:, :1])], 1).numpy()
        for row, n in enumerate(lengths):
            targets[row, n - 1] = vocab.eos_id
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=targets, logits=rnn.model(ids, training=False)).numpy()
        for row, text in enumerate(chunk):
            classes = word_classes(text, title_words, description_words) + ["<eos>"]
            for k in range(lengths[row]):  # target k is text[k + 1], or <eos>
                nats[classes[k + 1]] += float(nll[row, k])
                count[classes[k + 1]] += 1

    total_nats, total = sum(nats.values()), sum(count.values())
    rows = [{"class": c, "share_of_chars": count[c] / total, "nats_per_char": nats[c] / count[c],
             "share_of_nats": nats[c] / total_nats} for c in sorted(count, key=lambda c: -nats[c])]

    def if_like_title_words(where):
        """The overall figure if the characters of words in ``where`` cost what those of
        words in the training titles cost (first characters and the rest apart)."""
        swapped = total_nats
        for part in ("first char", "rest"):
            cls, ref = f"word in {where}: {part}", f"word in train titles: {part}"
            swapped += count[cls] * (nats[ref] / max(count[ref], 1)) - nats[cls]
        return swapped / total

    result = {
        "run_dir": os.path.abspath(args.run_dir),
        "run_config": {k: cfg[k] for k in ("field", "cell", "layers", "units", "embedding_dim", "dropout",
                                           "batch_size", "learning_rate", "epochs", "steps_per_epoch")},
        "scored": args.score,
        "titles": len(scored_titles),
        "targets": total,
        "nats_per_char": total_nats / total,
        "classes": rows,
        # The most that learning these words as well as the titles' words could win.
        "if_description_only_words_cost_like_title_words": if_like_title_words("train descriptions only"),
        "if_unseen_words_cost_like_title_words": if_like_title_words("neither"),
    }
    print(f"{result['nats_per_char']:.3f} nats/char over {total} targets ({args.score} titles)")
    for r in rows:
        print(f"  {r['class']:45s} {r['share_of_chars']:6.1%} of chars  "
              f"{r['nats_per_char']:.3f} nats/char  {r['share_of_nats']:6.1%} of nats")
    alike = result["if_description_only_words_cost_like_title_words"]
    print(f"if description-only words cost like title words: {alike:.3f}; "
          f"if unseen words did: {result['if_unseen_words_cost_like_title_words']:.3f}")
    common.write_result(args.out, {"benchmark": "quality_breakdown", **result})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
