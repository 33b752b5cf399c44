"""Build an object from its YAML spec, and write the spec back.

A spec is ``{type: <registered name>, **options}`` (or just the type name)::

    build_from_spec(OPTIMIZERS, {"type": "sgd", "lr": 0.1, "momentum": 0.9}, "optimizer",
                    params=net.parameters())

The options are checked against the constructor signature before anything is built,
so a typo is answered with the closest option name rather than silently ignored.
Arguments the caller supplies (an optimizer's parameters, a schedule's base learning
rate) are *context*: declared in the class's ``context_args``, passed as keywords,
never accepted from the spec.

A class deriving from ``Configurable`` records the options it was constructed with
(defaults filled in), so ``get_config()`` returns a spec that builds the same object.
"""

from __future__ import annotations

import copy
import functools
import inspect

from .errors import ConfigError
from .registry import Registry, did_you_mean


class Configurable:
    """Mixin: record constructor options; ``get_config()`` returns them as a spec.

    ``type_name`` is set by the registry (None for unregistered classes, whose spec
    then has no ``type`` key). ``context_args`` names constructor arguments that come
    from the caller, not from the spec; they are not recorded.
    """

    type_name: str | None = None
    context_args: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__dict__["__init__"])

    def get_config(self) -> dict:
        """``{'type': ..., **options}``: building from it gives an equal object."""
        config = {} if self.type_name is None else {"type": self.type_name}
        config.update(copy.deepcopy(getattr(self, "_init_args", {})))  # callers may edit it freely
        return config


def _recording_init(init):
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        if "_init_args" not in self.__dict__:  # the outermost constructor records
            try:
                bound = sig.bind(self, *args, **kwargs)
            except TypeError as exc:
                raise ConfigError(f"{type(self).type_name or type(self).__name__}: {exc}") from None
            bound.apply_defaults()
            skip = set(type(self).context_args)
            self._init_args = {k: val for k, val in list(bound.arguments.items())[1:] if k not in skip}
        init(self, *args, **kwargs)

    return wrapped


def option_names(cls) -> list[str]:
    """The spec options ``cls`` accepts: its keyword parameters minus its context arguments."""
    skip = set(getattr(cls, "context_args", ()))
    sig = inspect.signature(cls.__init__)
    return [name for name, p in sig.parameters.items()
            if name != "self" and name not in skip
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def check_options(cls, options: dict, where: str) -> None:
    """ConfigError for a key ``cls`` does not take (naming the closest) or a required option missing."""
    allowed = option_names(cls)
    for key in options:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown option '{key}'{did_you_mean(key, allowed)} "
                              f"(options: {', '.join(allowed) or 'none'})")
    params = inspect.signature(cls.__init__).parameters
    for name in allowed:
        if params[name].default is inspect.Parameter.empty and name not in options:
            raise ConfigError(f"{where}: missing required option '{name}'")


def build_from_spec(registry: Registry, spec, where: str, **context):
    """Build ``registry``'s class named by ``spec['type']`` from the spec's options.

    ``spec`` is a dict ``{type: name, **options}`` or a bare type name. ``where``
    (e.g. ``"optimizer"``) prefixes every error message. ``context`` is passed to the
    constructor as keywords (see the module docstring). Errors: ConfigError for a
    malformed spec, an unknown type or option, or an invalid option value.
    """
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where}: expected a type name or a mapping {{type: ..., <options>}}, "
                          f"received {spec!r} (known types: {', '.join(registry.names())})")
    type_name = spec["type"]
    try:
        cls = registry.get(type_name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    options = {k: val for k, val in spec.items() if k != "type"}
    return build(cls, options, f"{where} ({type_name})", **context)


def build(cls, options, where: str, **context):
    """``cls(**context, **options)`` after ``check_options``; errors prefixed with ``where``."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: expected a mapping of options, received {options!r}")
    check_options(cls, options, where)
    try:
        return cls(**context, **options)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
