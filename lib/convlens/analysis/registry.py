"""Analysis methods by name, filled by the @register decorator in each method module."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

MODULES = ["filters", "feature_maps", "deconv", "inversion", "cam", "embeddings", "knn", "examples"]


@dataclass(frozen=True)
class Method:
    name: str
    compute: Callable  # (Context) -> dict of numpy arrays and scalars
    draw: Callable  # (result dict, Context) -> list[plots.Panel]
    caption: str  # one line for the index


METHODS: dict[str, Method] = {}


def register(name: str, draw: Callable, caption: str):
    def wrap(compute):
        if name in METHODS:
            raise ValueError(f"analysis method {name!r} registered twice")
        METHODS[name] = Method(name, compute, draw, caption)
        return compute
    return wrap


def load_all() -> dict[str, Method]:
    """Import every method module (each registers itself) and return the registry."""
    for module in MODULES:
        importlib.import_module(f"convlens.analysis.{module}")
    return METHODS


def names() -> list[str]:
    return list(load_all())
