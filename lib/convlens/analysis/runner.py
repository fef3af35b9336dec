"""One method on one checkpoint: compute, draw, write PNGs and a JSON summary atomically."""
from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from convlens.analysis import plots, tables
from convlens.analysis.registry import load_all
from convlens.storage.files import write_atomic


def scalars(result: dict) -> dict:
    """The plain numbers and short strings of a result (arrays are only drawn, not stored)."""
    out = {}
    for k, v in result.items():
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif isinstance(v, np.generic):
            out[k] = v.item()
        elif isinstance(v, np.ndarray) and v.ndim == 1 and v.size <= 64 and v.dtype.kind in "fiu":
            out[k] = v.tolist()
    return out


def run_method(ctx, name: str, out_dir: Path, meta: dict,
               after_file: Callable[[Path], None] | None = None) -> list[dict]:
    """Write <out_dir>/<name>[_suffix].png and <name>.json; return their index entries.

    A retry after a killed attempt overwrites that attempt's files and removes its temp files.
    """
    method = load_all()[name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f".{name}*.tmp-*"):
        stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    result = method.compute(ctx)
    seconds = time.perf_counter() - t0
    entries = []
    for panel in method.draw(result, ctx):
        path = out_dir / (f"{name}_{panel.suffix}.png" if panel.suffix else f"{name}.png")
        plots.save_png(panel.figure, path)
        entries.append({**meta, "method": name, "file": str(path), "caption": panel.caption})
        if after_file is not None:
            after_file(path)
    summary = {**meta, "method": name, "caption": method.caption, "compute_seconds": round(seconds, 3),
               "images": len(ctx.images), "files": [e["file"] for e in entries], "result": scalars(result),
               "host": socket.gethostname(), "pid": os.getpid()}
    path = out_dir / f"{name}.json"
    raw = tables.raw_arrays(name, result, list(ctx.classes))
    if raw is not None:  # the arrays of this method's W&B table, for the driver
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **raw)
        write_atomic(path.with_suffix(".npz"), buffer.getvalue())
    write_atomic(path, json.dumps(summary, indent=1).encode())
    entries.append({**meta, "method": name, "file": str(path), "caption": f"{method.caption}: numbers"})
    return entries
