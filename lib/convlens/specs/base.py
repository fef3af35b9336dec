"""What every spec shares: strict pydantic models, YAML reading, dotted overrides, and errors
that name the field and the value."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from convlens.base.errors import ConfigError

RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_default=True)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['optim.lr=0.05', 'model.layers=[1,1]'] -> {'optim.lr': 0.05, 'model.layers': [1, 1]}."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        out[key] = yaml.safe_load(raw) if raw != "" else None
    return out


def apply_overrides(spec: dict, overrides: dict[str, Any]) -> dict:
    """Set each dotted key in the nested spec (in place; returns it)."""
    for key, value in overrides.items():
        node = spec
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
            node = child
        node[leaf] = value
    return spec


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'run': {'epochs': 2}, 'optim.lr': 0.1} -> {'run.epochs': 2, 'optim.lr': 0.1}."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"spec file {path}: not found")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"spec file {path}: not valid YAML ({err})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"spec file {path}: top level must be a mapping")
    return spec


def validate(model_cls: type[BaseModel], spec: dict, source: str = "spec"):
    try:
        return model_cls.model_validate(spec)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid {source}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown field")
        elif field:
            lines.append(f"  {field} = {e.get('input')!r}: {msg}")
        else:
            lines.append(f"  {msg}")
    return "\n".join(lines)


def has_field(model: type[BaseModel], dotted: str) -> bool:
    """Whether a dotted path ('optim.lr') names a field of a spec model."""
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return False
        model = fields[part].annotation
    return True
