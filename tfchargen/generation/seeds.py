"""Per-row seeds from one user seed: the rule the CLI and the C and Go clients share.

The ``generate`` signature's contract is per row: a row's ``seed`` alone decides its random
draws (0 = unseeded: fresh in every process and call), whatever else is in the batch. So
rows that carry the same nonzero seed also draw the same noise, and a request that sent
one ``--seed`` to several prompts, or to several samples of one prompt, would get
continuations that move in lockstep. The clients therefore never send the user's seed
itself: row ``index`` of a request gets ``row_seed(user_seed, index)``.

Row index (the same in ``tfchargen generate``, ``tfchargen-c`` and ``tfchargen-go``):

    index = prompt_position * num_samples + sample

``prompt_position`` counts the prompts in the order given, from 0 (a prompt given twice
gets two indexes); ``sample`` counts a prompt's samples from 0 (``--num-samples``; the C
and Go clients draw one sample per prompt, so their index is the prompt's position). The
rows of a ``--temperatures`` table reuse these indexes at every temperature: one prompt's
sample draws the same noise at each temperature, so the table compares temperatures, not
luck.

Pure Python (no TensorFlow), so the CLI can compute seeds before it loads a model.
"""

from __future__ import annotations

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment (2**64 / golden ratio, odd)


def row_seed(user_seed: int, index: int) -> int:
    """The seed that row ``index`` of a request made with ``user_seed`` sends.

    The specification, implemented literally in export/c/tfchargen.c and export/go/main.go
    (all arithmetic on unsigned 64-bit integers, i.e. modulo 2**64):

    1. ``user_seed == 0``: return 0 (every row unseeded).
    2. ``z = u + (index + 1) * 0x9E3779B97F4A7C15`` where ``u`` is ``user_seed``'s
       two's-complement bit pattern (``user_seed mod 2**64``).
    3. ``z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9``
    4. ``z = (z ^ (z >> 27)) * 0x94D049BB133111EB``
    5. ``z = z ^ (z >> 31)``
    6. ``z = z & 0x7FFFFFFFFFFFFFFF`` (into the int64 ``seed`` input's range, >= 0)
    7. return ``z``, or 1 if ``z == 0`` (never "unseeded" by accident).

    Steps 2-5 are output number ``index + 1`` of Steele, Lea and Flood's SplitMix64
    generator started at state ``u``: distinct indexes give unrelated seeds, and
    neighbouring user seeds give unrelated rows.

    Args:
        user_seed: the user's ``--seed``, an int64 (0 = unseeded).
        index: the row's index (see the module docstring), >= 0.

    Example:
    >>> row_seed(0, 3)
    0
    >>> [row_seed(5, i) for i in range(3)]
    [7134611160154358618, 4654242949169100536, 4292726422858613063]
    >>> row_seed(-1, 0)
    7266964230113668128
    """
    if not INT64_MIN <= user_seed <= INT64_MAX:
        raise ValueError(f"seed must be a 64-bit signed integer, got {user_seed}")
    if index < 0:
        raise ValueError(f"row index must be >= 0, got {index}")
    if user_seed == 0:
        return 0
    z = (user_seed + (index + 1) * _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    z &= INT64_MAX
    return z or 1
