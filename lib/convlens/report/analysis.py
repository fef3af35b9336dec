"""An analysis folder: one subsection per method, its words and figures all read from the
index.json `convlens analyze` wrote (format in rundir.AnalysisDir)."""
from __future__ import annotations

from pathlib import Path

from convlens.report.html import anchor, esc, img, markup, table
from convlens.storage.rundir import AnalysisDir


def figures(folder: Path, index: dict) -> list[dict]:
    """The index's PNG entries that exist (its JSON numbers stay out)."""
    return [e for e in index.get("files", []) if e["file"].endswith(".png") and (folder / e["file"]).is_file()]


def title(folder: Path) -> str:
    """"Analysis <folder>", or just "Analysis" for a folder of that name (the demo's)."""
    return "Analysis" if folder.name == "analysis" else f"Analysis {folder.name}"


def analysis_section(folder: Path) -> str:
    index = AnalysisDir(folder).read_index()
    entries = figures(folder, index)
    about = index.get("methods")
    about = about if isinstance(about, dict) else {}  # an index from before the words were recorded
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(e.get("method", "other"), []).append(e)
    tables = index.get("tables") if isinstance(index.get("tables"), dict) else {}
    order = [m for m in about if m in groups or m in tables]
    order += sorted(m for m in set(groups) | set(tables) if m not in about)
    parts = [f"<h2 id='{anchor(folder)}'>{esc(title(folder))}</h2>",
             f"<p>{len(entries)} figures from <code>{esc(folder)}</code>, grouped by method.</p>"]
    notes = set()
    for method in order:
        words = about.get(method, {})
        parts.append(f"<h3>{esc(words.get('title') or method.replace('_', ' ').capitalize())}</h3>")
        if words.get("explanation"):
            parts.append(f"<p>{esc(words['explanation'])}</p>")
        if words.get("note") and words["note"] not in notes:  # a note shared by methods: once, under the first
            notes.add(words["note"])
            parts.append(f"<p class='note'>{markup(words['note'])}</p>")
        if method in tables:  # the method's numbers per run and epoch
            parts.append(number_table(tables[method]))
        for e in groups.get(method, []):
            caption = e.get("caption", "") + (f" [{Path(e['checkpoint']).name}]" if e.get("checkpoint") else "")
            parts.append(img(folder / e["file"], caption, "28rem"))
    return "".join(parts)


def number_table(t: dict) -> str:
    """index.json's table of one method: a row per run and epoch, a column per number (a column
    no row fills, e.g. a fourth stage of a three-stage network, is left out)."""
    names = t["columns"][2:]
    keep = [j for j in range(len(names)) if any(r[2 + j] is not None for r in t["rows"])]
    head = ["run / epoch", *(names[j].replace("_", " ") for j in keep)]
    return table(head, [[f"{r[0]} / epoch {r[1]}", *(r[2 + j] for j in keep)] for r in t["rows"]])
