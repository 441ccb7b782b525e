"""Types of the command-line options: each names its bound, so argparse refuses a bad value with
exit code 2 and a message naming the option, before a command starts. Loads nothing heavy."""

from __future__ import annotations

import argparse
import json

from .config import MAX_DAY

__all__ = ["COORDINATE", "COUNT", "DAY", "FRACTION", "POSITIVE", "SEED", "json_object", "number"]


def number(kind: type, low: float, *, strict: bool = True, high: float | None = None, what: str = ""):
    """An argparse type: a finite ``kind`` above ``low`` (``>=`` unless ``strict``), at most ``high``."""
    bound = f"> {low:g}" if strict else f">= {low:g}"
    bound += "" if high is None else f" and < {high:d}" if kind is int else f" and < {high:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or (value <= low if strict else value < low) \
                or (high is not None and value >= high):
            noun = "an integer" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"must be {noun} {bound}{what}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {bound}"  # argparse names the type in its messages
    return parse


POSITIVE = number(float, 0.0)
FRACTION = number(float, 0.0, high=1.0)
COUNT = number(int, 0)
COORDINATE = number(float, float("-inf"))
SEED = number(int, 0, strict=False, high=2**32)  # numpy's seeds: 0 .. 2**32 - 1
DAY = number(float, 0.0, high=MAX_DAY, what=" (days; a later day is a unit error)")


def json_object(text: str) -> dict:
    """An argparse type: a JSON object, e.g. ``'{"octants": true}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg} at character {err.pos}): {text!r}; "
                                         """e.g. '{"octants": true}'""") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of keyword arguments, got {text!r}")
    return value
