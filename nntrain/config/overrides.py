"""``--set KEY=VALUE``: one config value given on the command line.

``KEY`` is a dotted path; list items are addressed by index or, in ``model``, by layer
name: the explicit ``name:`` or the automatic ``<type>_<k>`` that ``nntrain show``
prints (``model.conv2d_2.out_channels=64``; the rule is ``nntrain.graph.node_names``).
``VALUE`` is YAML, read with the same bounds and refusals as a file (a date is a
string, ``!!python/...`` is refused); text that is not YAML is taken as a string.
Errors name the ``--set`` option, not the config file.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import did_you_mean
from .schema import EVAL_KEYS, SECTIONS, TRAIN_KEYS
from .yaml_reader import YAMLSyntaxError, parse


def split_key_value(text: str, option: str = "--set", example: str = "optimizer.lr=0.01",
                    form: str = "KEY=VALUE") -> tuple[str, str]:
    """``'optimizer.lr=0.01'`` -> ('optimizer.lr', '0.01'); ConfigError naming ``option`` if malformed."""
    if "=" not in text:
        raise ConfigError(f"{option} {text}: expected {form}, e.g. {option} {example}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{option} {text}: bad key '{key}'")
    return key, raw


def parse_override(text: str) -> tuple[list, object]:
    """``'optimizer.lr=0.01'`` -> (['optimizer', 'lr'], 0.01); the value is parsed as YAML."""
    key, raw = split_key_value(text)
    try:
        value = parse(raw, f"--set {text}", numbered=False)[0] if raw.strip() else ""
    except YAMLSyntaxError:
        value = raw
    return key.split("."), value


def apply_override(config: dict, parts: list, value, text: str) -> tuple:
    """Set a dotted key; returns the key path it set, list items as indices."""
    node, path = config, []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            part = _list_index(node, part, where, text, tuple(path) == ("model",))
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {text}: '{'.'.join(parts[:i])}' is not a section")
        path.append(part)
        if last:
            node[part] = value
            return tuple(path)
        if isinstance(node, dict) and node.get(part) is None:
            node[part] = {}
        node = node[part]


def _list_index(items: list, part: str, where: str, text: str, is_model: bool) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise ConfigError(f"--set {text}: index {index} out of range for a list of {len(items)}")
        return index % len(items)
    if is_model:
        from ..graph import node_names

        names = node_names(items)
    else:
        names = [item.get("name") if isinstance(item, dict) else None for item in items]
    if part in names:
        return names.index(part)
    raise ConfigError(f"--set {text}: no item named '{part}' in {where.rsplit('.', 1)[0]}"
                      f"{did_you_mean(part, [n for n in names if isinstance(n, str)])}")


def check_override_key(parts: list, text: str) -> None:
    """An unknown top-level or fixed-schema key in --set is an error with a suggestion."""
    if parts[0] not in SECTIONS:
        raise ConfigError(f"--set {text}: unknown key '{parts[0]}'{did_you_mean(parts[0], SECTIONS)} "
                          f"(allowed: {', '.join(SECTIONS)})")
    allowed = {"train": TRAIN_KEYS, "eval": EVAL_KEYS}
    if parts[0] in allowed and len(parts) >= 2 and parts[1] not in allowed[parts[0]]:
        raise ConfigError(f"--set {text}: unknown key '{parts[0]}.{parts[1]}'"
                          f"{did_you_mean(parts[1], allowed[parts[0]])}")
