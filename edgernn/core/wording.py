"""Words in messages: counts with their noun in agreement ("1 value", "3 values")."""

from __future__ import annotations


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`n` and its noun: plural(1, "value") -> "1 value"; plural(3, "value") -> "3 values"."""
    return f"{n} {noun if n == 1 else (many or noun + 's')}"
