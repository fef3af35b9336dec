"""Numbers as the README's results block prints them, and the words that compare them.

A comparison is made on the printed numbers, so its word always agrees with what the reader
sees: "0.511 vs 0.507" on deletion (lower is better) is "loses to", and two equal printed
numbers "tie". Pure functions, no files.
"""
from __future__ import annotations


def pct(x: float) -> str:
    """A fraction in [0, 1] as a percentage with one decimal: 0.9083 -> '90.8%'."""
    return f"{100 * x:.1f}%"


def area(x: float) -> str:
    """An area under a curve, or a CKA, with three decimals."""
    return f"{x:.3f}"


def seconds(s: float) -> str:
    """A duration: whole seconds, tenths under 10 s."""
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def shown(text: str) -> float:
    """The number a formatted value prints ('90.8%' -> 90.8)."""
    return float(text.rstrip("%"))


def verdict(a: str, b: str, better: str = "higher") -> str:
    """'beats', 'loses to' or 'ties with': printed value a against printed value b."""
    x, y = shown(a), shown(b)
    if x == y:
        return "ties with"
    return "beats" if (x > y) == (better == "higher") else "loses to"


def best_of(values: dict, better: str = "higher"):
    """The key whose printed value is best (the first one on a tie)."""
    pick = max if better == "higher" else min
    return pick(values, key=lambda k: shown(values[k]))


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cell(text: str) -> str:
    """A trials.csv value as a table shows it: floats to 3 significant digits, the rest as written."""
    try:
        return f"{float(text):.3g}" if "." in text or "e" in text else text
    except ValueError:
        return text


def table(columns: list[str], rows) -> list[str]:
    """A markdown table, one line per row."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]
