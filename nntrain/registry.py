"""Name -> class registries for layers, losses, optimizers, schedules, initialisers
and augmentations.

A registry refuses a name registered twice, and answers an unknown name with the
closest known one and the full list (as Caffe's layer factory does)::

    LAYERS = Registry("layer")

    @LAYERS.register("relu")
    class ReLU(Layer): ...

    LAYERS.get("reul")  # ConfigError: unknown layer type 'reul'; did you mean 'relu'? known: ...
"""

from __future__ import annotations

import difflib

from .errors import ConfigError


def did_you_mean(name: str, known) -> str:
    """' (did you mean 'x'?)' for the closest of ``known``, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class Registry:
    """A mapping from type name to class, filled by the ``register`` decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: register ``cls`` under ``name`` and set ``cls.type_name``."""

        def decorate(cls):
            if name in self._classes:
                raise ValueError(
                    f"{self.kind} type '{name}' is registered twice "
                    f"({self._classes[name].__qualname__} and {cls.__qualname__})"
                )
            self._classes[name] = cls
            cls.type_name = name
            return cls

        return decorate

    def get(self, name: str) -> type:
        """The class registered as ``name``; ConfigError naming the closest match if unknown."""
        _load_builtins()
        try:
            return self._classes[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown {self.kind} type {name!r}{did_you_mean(name, self._classes)} "
                f"(known: {', '.join(sorted(self._classes))})"
            ) from None

    def names(self) -> list[str]:
        _load_builtins()
        return sorted(self._classes)

    def __contains__(self, name) -> bool:
        _load_builtins()
        return name in self._classes

    def items(self):
        _load_builtins()
        return sorted(self._classes.items())


LAYERS = Registry("layer")
LOSSES = Registry("loss")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")
INITIALIZERS = Registry("initializer")
AUGMENTATIONS = Registry("augmentation")
DATASETS = Registry("dataset")

_loaded = False


def _load_builtins() -> None:
    """Import the modules that register the built-in classes (once, lazily)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import initializers, layers, losses, optim, schedules  # noqa: F401
    from .data import augment, datasets  # noqa: F401
