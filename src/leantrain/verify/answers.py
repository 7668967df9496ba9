"""Final answers out of model text, and numeric comparison of answers: pure functions.

- ``last_number``: the last number written in a text. The default SmolLM2 model answers in a
  sentence ("The final answer to this arithmetic problem is 6."), and scoring the raw completion
  gives ~0 reward everywhere; its last number is what a checker should read.
- ``boxed_answer``: the content of the last ``\\boxed{...}``, braces balanced, so that
  ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}`` (the MATH convention, lm-eval-harness's
  ``last_boxed_only_string``; a regex without brace counting fails on nested braces).
- ``parse_number`` and ``numbers_equal``: an answer string as an exact ``Fraction`` (integers,
  decimals, ``1,234``, ``3/4``, ``\\frac{3}{4}``), and equality within an absolute tolerance.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

# A number inside running text. It does not start inside another number ("1.2.3", "2024-01-05")
# and takes a sign only where the sign cannot be a binary operator ("5-3" gives 5 and 3, "= -3"
# gives -3). Thousands separators need groups of exactly three digits. A trailing period ends a
# sentence, so "6." is 6; "3/4" is one number.
_NUMBER_IN_TEXT = re.compile(
    r"(?<![0-9.])"
    r"(?:(?<![A-Za-z0-9_)\]}])[-+−])?"
    r"(?:[0-9]+/[0-9]+|(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)"
)
# A whole answer that is one number: a decimal (thousands separators allowed) or an integer fraction.
_NUMBER = re.compile(r"[-+]?(?:(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)|[-+]?[0-9]+/[0-9]+")
_LATEX_FRACTION = re.compile(r"([-+]?)\\[dt]?frac\{\s*([-+]?[0-9]+)\s*\}\{\s*([0-9]+)\s*\}")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_number(text: str) -> str | None:
    """The last number in ``text`` as written there ("1,234", "-3.5", "3/4"), or None if it has none.

    A sentence's full stop is not a decimal point ("is 6." gives "6"); a minus sign belongs to the
    number unless it follows an operand ("5-3" gives "3"). Extraction only: ``parse_number`` reads
    the value.
    """
    numbers = _NUMBER_IN_TEXT.findall(text)
    return numbers[-1] if numbers else None


def boxed_answer(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, or None.

    Braces are counted, so nested groups stay whole: ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``.
    A ``\\boxed{`` whose braces never close (a truncated completion) is passed over for the one
    before it. The content is returned stripped of surrounding whitespace.
    """
    for start in reversed([match.end() for match in _BOXED.finditer(text)]):
        depth = 1
        for position in range(start, len(text)):
            if text[position] == "{":
                depth += 1
            elif text[position] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:position].strip()
    return None


def parse_number(answer: str | int | float) -> Fraction | None:
    """``answer`` as an exact ``Fraction``, or None if it is not one number.

    Reads integers, decimals, a sign, thousands separators ("1,234", LaTeX's "1{,}234"), integer
    fractions ("3/4", ``\\frac{3}{4}``, ``\\dfrac``, ``\\tfrac``), between optional ``$`` signs and
    with an optional trailing period. ints and finite floats are taken as they are. Anything else
    (words, units, expressions, a zero denominator) is None.
    """
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return Fraction(answer)
    if isinstance(answer, float):
        return Fraction(answer) if math.isfinite(answer) else None
    text = answer.strip().strip("$").strip().replace("−", "-").replace("{,}", ",")
    text = text.removesuffix(".").strip()
    try:
        fraction = _LATEX_FRACTION.fullmatch(text)
        if fraction is not None:
            sign, numerator, denominator = fraction.groups()
            value = Fraction(int(numerator), int(denominator))
            return -value if sign == "-" else value
        return Fraction(text.replace(",", "")) if _NUMBER.fullmatch(text) else None
    except ZeroDivisionError:
        return None


def numbers_equal(a: str | int | float, b: str | int | float, tolerance: float = 1e-6) -> bool:
    """True when ``a`` and ``b`` both read as numbers (``parse_number``) within ``tolerance`` of each other.

    The tolerance is absolute and the comparison exact in rationals: "0.5", "1/2" and ``\\frac{1}{2}``
    are equal; "1,234" equals "1234"; an answer that is not a number equals nothing.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    x, y = parse_number(a), parse_number(b)
    return x is not None and y is not None and abs(x - y) <= Fraction(tolerance)
