"""What a visitor types, checked before any model sees it: one clear message instead of a stack trace.

`gr.Error` shows its message on the page (and to API clients); every other output keeps working.
"""
from __future__ import annotations

import math
import unicodedata

import gradio as gr

from zoo.data import Tokenizer

MAX_CHARS = 10_000


def refuse(message: str) -> gr.Error:
    """The error a handler raises for bad input: shown on the page, no traceback in the server log."""
    return gr.Error(message, print_exception=False)


def check_text(text: str | None, what: str) -> str:
    """`text`, unless it is empty, longer than MAX_CHARS or looks binary (control characters, U+FFFD)."""
    if text is None or not text.strip():
        raise refuse(f"The {what} is empty: type or paste some text.")
    if len(text) > MAX_CHARS:
        raise refuse(f"The {what} has {len(text):,} characters; the limit is {MAX_CHARS:,}.")
    binary = sum(c == "\ufffd" or (unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r") for c in text)
    if binary:
        raise refuse(f"The {what} looks like binary data, not text ({binary} control or undecodable "
                     f"characters): paste plain text.")
    return text


def check_number(value, what: str, low: float, high: float, integer: bool = True) -> float:
    """`value` if it is a number in [low, high] (and whole when `integer`), else a clear refusal."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or (integer and not float(value).is_integer()) or not low <= value <= high:
        kind = "a whole number" if integer else "a number"
        raise refuse(f"The {what} must be {kind} from {low} to {high}, not {value!r}.")
    return int(value) if integer else float(value)


def outside_vocabulary(tokenizer: Tokenizer, text: str) -> tuple[list[str], str]:
    """The distinct characters (or words) of `text` a model cannot read as themselves, and what it reads instead."""
    if tokenizer.mode == "book":   # lowercases; any other run of non-letters becomes one space
        return list(dict.fromkeys(c for c in text if not c.isspace() and c.lower() not in tokenizer.index)), \
            "spaces (the vocabulary is a-z and space)"
    return tokenizer.unknown(text), "<unk>"


def vocabulary_note(tokenizers: list[Tokenizer], text: str, limit: int = 30) -> str:
    """One line per distinct tokenizer about what it does not know in `text`; '' when it knows it all."""
    lines = []
    for tokenizer in {(t.mode, tuple(t.tokens)): t for t in tokenizers}.values():
        unknown, read_as = outside_vocabulary(tokenizer, text)
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:limit]) + (" ..." if len(unknown) > limit else "")
            lines.append(f"Outside the vocabulary, read as {read_as}: {shown}")
    return "\n\n".join(lines)
