"""Small checks that fail loudly and say why: the value received and what is allowed.

Every constructor option of a layer, loss, optimizer, schedule or augmentation goes
through one of these, so a bad YAML value gives e.g.
``expected a positive integer, received out_channels=0``.
"""

from __future__ import annotations

import numbers

from .errors import ConfigError

# The largest size-like integer an option may take (a count of features, channels, pixels,
# steps...): nothing legitimate comes near it, and larger values would overflow numpy's
# int32/intp arithmetic (or a C long) before any memory estimate could refuse them.
MAX_SIZE = 2**31 - 1


def _fail(what: str, name: str, value) -> None:
    raise ConfigError(f"expected {what}, received {name}={value!r}")


def integer(value, name: str, *, min_value: int | None = None, max_value: int | None = None) -> int:
    """An int (bools rejected) within the given inclusive bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail("an integer", name, value)
    if min_value is not None and value < min_value:
        _fail(f"an integer >= {min_value}", name, value)
    if max_value is not None and value > max_value:
        _fail(f"an integer <= {max_value}", name, value)
    return int(value)


def positive_int(value, name: str, *, max_value: int = MAX_SIZE) -> int:
    """An int in [1, max_value] (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        _fail("a positive integer", name, value)
    if value > max_value:
        _fail(f"a positive integer <= {max_value}", name, value)
    return int(value)


def real(value, name: str, *, min_value=None, max_value=None, min_open=False, max_open=False) -> float:
    """A finite real number; bounds are inclusive unless ``*_open``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        _fail("a number", name, value)
    value = float(value)
    if value in (float("inf"), float("-inf")):
        _fail("a finite number", name, value)
    if min_value is not None and (value < min_value or (min_open and value == min_value)):
        _fail(f"a number {'>' if min_open else '>='} {min_value}", name, value)
    if max_value is not None and (value > max_value or (max_open and value == max_value)):
        _fail(f"a number {'<' if max_open else '<='} {max_value}", name, value)
    return value


def positive(value, name: str) -> float:
    return real(value, name, min_value=0.0, min_open=True)


def non_negative(value, name: str) -> float:
    return real(value, name, min_value=0.0)


def probability(value, name: str, *, allow_one: bool = False) -> float:
    """A number in [0, 1) (or [0, 1] with ``allow_one``)."""
    return real(value, name, min_value=0.0, max_value=1.0, max_open=not allow_one)


def boolean(value, name: str) -> bool:
    if not isinstance(value, bool):
        _fail("true or false", name, value)
    return value


def choice(value, name: str, allowed) -> str:
    if value not in allowed:
        from .registry import did_you_mean

        raise ConfigError(
            f"expected one of {', '.join(map(str, allowed))}, received {name}={value!r}"
            f"{did_you_mean(value, allowed)}"
        )
    return value


def pair(value, name: str, *, min_value: int = 0, max_value: int = MAX_SIZE) -> tuple[int, int]:
    """An int or a list of two ints (height, width), each in [``min_value``, ``max_value``]."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            _fail("an integer or a list of two integers", name, value)
        return (integer(value[0], name, min_value=min_value, max_value=max_value),
                integer(value[1], name, min_value=min_value, max_value=max_value))
    v = integer(value, name, min_value=min_value, max_value=max_value)
    return (v, v)


def int_list(value, name: str, *, min_value: int | None = None, max_value: int = MAX_SIZE) -> list[int]:
    if not isinstance(value, (list, tuple)):
        _fail("a list of integers", name, value)
    return [integer(v, f"{name}[{i}]", min_value=min_value, max_value=max_value) for i, v in enumerate(value)]


def real_list(value, name: str) -> list[float]:
    if not isinstance(value, (list, tuple)):
        _fail("a list of numbers", name, value)
    return [real(v, f"{name}[{i}]") for i, v in enumerate(value)]
