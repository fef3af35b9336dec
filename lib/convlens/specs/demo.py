"""The demo job: a pipeline of other jobs' specs (train both networks, probe, sweep, analyze, report)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from convlens.specs.base import Strict


class StepSpec(Strict):
    spec: str  # a job spec file
    overrides: dict[str, Any] = Field(default_factory=dict)  # dotted key -> value


class DemoJob(Strict):
    kind: Literal["demo"] = "demo"
    root: str = "runs/demo"  # every step writes below here
    supervised: StepSpec
    rotation: StepSpec | None = None
    probes: StepSpec | None = None
    sweep: StepSpec | None = None
    analysis: StepSpec | None = None
    report: bool = True
    quiet: bool = False
