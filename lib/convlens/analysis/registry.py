"""Analysis methods by name, filled by the @register decorator in each method module.

A method's entry is everything known about it: how to compute and draw it, and what the
report says about it (title, explanation, note), so each fact is written once, beside the
method's code. `convlens analyze` copies the words into index.json; the report reads them there.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

MODULES = ["filters", "feature_maps", "deconv", "inversion", "cam", "faithfulness", "depth", "embeddings", "knn", "examples"]


@dataclass(frozen=True)
class Method:
    name: str
    compute: Callable  # (Context) -> dict of numpy arrays and scalars
    draw: Callable  # (result dict, Context) -> list[plots.Panel]
    title: str  # the report's heading for the method
    explanation: str  # one paragraph under the heading: what the figures show and why
    caption: str  # one line for the index
    note: str = ""  # a longer aside; methods sharing one show it once (<i> <b> <em> <sub> <sup> allowed)
    table: tuple[str, ...] = ()  # result scalars logged to W&B as a table, one row per epoch

    def describe(self) -> dict:
        """The method's words, as index.json records them."""
        about = {"title": self.title, "explanation": self.explanation, "caption": self.caption}
        return {**about, "note": self.note} if self.note else about


METHODS: dict[str, Method] = {}


def register(name: str, draw: Callable, *, title: str, explanation: str, caption: str, note: str = "",
             table: tuple[str, ...] = ()):
    def wrap(compute):
        if name in METHODS:
            raise ValueError(f"analysis method {name!r} registered twice")
        missing = [k for k, v in (("title", title), ("explanation", explanation), ("caption", caption)) if not v]
        if missing:
            raise ValueError(f"analysis method {name!r}: empty {', '.join(missing)}")
        METHODS[name] = Method(name, compute, draw, title, explanation, caption, note, tuple(table))
        return compute
    return wrap


def load_all() -> dict[str, Method]:
    """Import every method module (each registers itself) and return the registry, its methods in
    the order of MODULES whichever module was imported first (the probes import knn's maths)."""
    for module in MODULES:
        importlib.import_module(f"convlens.analysis.{module}")
    order = {f"convlens.analysis.{module}": i for i, module in enumerate(MODULES)}
    ordered = sorted(METHODS.values(), key=lambda m: order.get(getattr(m.compute, "__module__", ""), len(order)))
    if list(METHODS) != [m.name for m in ordered]:
        METHODS.clear()
        METHODS.update({m.name: m for m in ordered})
    return METHODS


def names() -> list[str]:
    return list(load_all())
