"""The whole page: find the run, sweep and analysis folders, render their sections in
order, and write one HTML file."""
from __future__ import annotations

from pathlib import Path

from convlens.base.errors import ConfigError
from convlens.report.analysis import analysis_section, title as analysis_title
from convlens.report.compare import COMPARE_ANCHOR, comparison_section
from convlens.report.html import anchor, esc, page
from convlens.report.runs import load_run, loss_section, run_section
from convlens.report.sweeps import sweep_section
from convlens.storage.rundir import AnalysisDir, RunDir, SweepDir

MARKERS = (("runs", RunDir.SUMMARY), ("sweeps", SweepDir.TRIALS), ("analyses", AnalysisDir.INDEX))
SKIP_DIRS = (RunDir.CHECKPOINT, RunDir.BEST, RunDir.WANDB, ".")  # never hold a report's folders


def write_report(paths, out=None) -> Path:
    """Write one HTML report of every run/sweep/analysis folder under `paths`; returns its path."""
    paths = [Path(p).expanduser() for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    for p in paths:
        if not p.is_dir():
            raise ConfigError(f"report: {p} is not a folder")
    found = discover(paths)
    if not any(found.values()):
        raise ConfigError(f"report: no run ({RunDir.SUMMARY}), sweep ({SweepDir.TRIALS}) or analysis "
                          f"({AnalysisDir.INDEX}) folder under {', '.join(map(str, paths))}")
    out = Path(out) if out else paths[0] / "report.html"
    print(f"[convlens] report: {len(found['runs'])} run(s), {len(found['sweeps'])} sweep(s), "
          f"{len(found['analyses'])} analysis folder(s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    html = render(found)
    out.write_text(html, encoding="utf-8")
    print(f"[convlens] report: {html.count('<img ')} figures embedded, {out.stat().st_size / 1e6:.1f} MB",
          flush=True)
    return out


def discover(paths: list[Path]) -> dict[str, list[Path]]:
    """Run, sweep and analysis folders under paths; a sweep's trial runs stay in its table
    unless named themselves."""
    found = {kind: [] for kind, _ in MARKERS}
    paths = [p.resolve() for p in paths]
    for root in paths:
        for folder in [root, *sorted(walk(root))]:
            for kind, marker in MARKERS:
                if (folder / marker).is_file() and folder not in found[kind]:
                    found[kind].append(folder)
    found["runs"] = [r for r in found["runs"]
                     if r in paths or not any(r.is_relative_to(s) for s in found["sweeps"])]
    return found


def walk(root: Path, depth: int = 3):
    if depth == 0:
        return
    for child in root.iterdir():
        if child.is_dir() and not child.name.startswith(SKIP_DIRS):
            yield child
            yield from walk(child, depth - 1)


def render(found: dict[str, list[Path]]) -> str:
    runs = sorted((load_run(d) for d in found["runs"]),  # supervised first, then pretext runs
                  key=lambda r: (r["summary"].get("task") != "supervised", str(r["dir"])))
    compare = {r["summary"].get("task") for r in runs} >= {"supervised", "rotation"}
    body = [intro(found, [r["dir"] for r in runs], compare), loss_section()]
    for run in runs:
        print(f"[convlens] report: run {run['summary'].get('run', run['dir'].name)}", flush=True)
        body.append(run_section(run))
    if compare:
        body.append(comparison_section(runs, found["analyses"]))
    for folder in found["sweeps"]:
        print(f"[convlens] report: sweep {folder.name}", flush=True)
        body.append(sweep_section(folder))
    for folder in found["analyses"]:
        print(f"[convlens] report: analysis {folder.name}", flush=True)
        body.append(analysis_section(folder))
    return page(body)


def intro(found: dict[str, list[Path]], run_dirs: list[Path], compare: bool) -> str:
    """The title and a link to every section, in the page's order."""
    links = [("loss", "The loss")] + [(anchor(d), f"Run {d.name}") for d in run_dirs]
    links += [(COMPARE_ANCHOR, "Supervised vs. rotation")] if compare else []
    links += [(anchor(d), f"Sweep {d.name}") for d in found["sweeps"]]
    links += [(anchor(d), analysis_title(d)) for d in found["analyses"]]
    nav = "".join(f"<a href='#{a}'>{esc(t)}</a>" for a, t in links)
    return ("<h1>Looking inside convolutional networks</h1>"
            "<p>Training runs, hyper-parameter sweeps and visualisations of what the networks learned, "
            "produced by <code>convlens</code>. Every figure below is embedded in this single file.</p>"
            f"<nav>{nav}</nav>")
