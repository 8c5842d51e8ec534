"""Models by name: `@register_model` on a small factory, `list_models()`, `create_model(name, **overrides)`.

The names are what the CLI, the scripts, the app and the tests iterate over, so a model registered here is
trained, benchmarked, shown and tested from the day it is added. A model's config records its name, so a
saved folder is rebuilt by the same factory.
"""
from __future__ import annotations

import fnmatch
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register `factory` under its function name with dashes (`deep_lstm_scratch` -> `deep-lstm-scratch`).

    `create_model` calls it with `name=` that name and the caller's overrides, which it passes on to the
    model's config.
    """
    _MODELS[factory.__name__.replace("_", "-")] = factory
    return factory


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell pattern, in registration order."""
    return [name for name in _MODELS if fnmatch.fnmatch(name, pattern)]


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; `overrides` replace its defaults (vocab_size, num_hiddens, num_layers, ...)."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(_MODELS)}")
    return _MODELS[name](name=name, **overrides)


def describe(name: str) -> str:
    """The first line of a registered model's docstring."""
    doc = (_MODELS[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
