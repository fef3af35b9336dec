"""The command line as a user meets it: --version, help, `show`, exit codes. (A run that fails, exit 1:
tests/test_reliability.py's retries exhausted; progress lines in a log file:
tests/test_tracking.py's test_run_logging_to_a_file_on_a_node_without_internet.)"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import DDP, TWO_WORKERS, tiny_spec
from convlens.cli import main

LIB = str(Path(__file__).resolve().parents[1] / "lib")


def write(tmp_path: Path, spec: dict, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and re.fullmatch(r"convlens \d+\.\d+\.\d+\n", capsys.readouterr().out)


@pytest.mark.parametrize("command", ["train", "sweep", "analyze", "probe", "demo", "bench", "show", "report",
                                     "submit", "follow", "sync", "fetch-data"])
def test_every_subcommand_helps_with_a_paragraph_and_an_example(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    usage, description = text.split("\n\n")[:2]
    assert len(description.split()) >= 12, description
    assert re.search(rf"example:\n  convlens {command} \S+", text), text


def test_show_prints_the_resolved_spec_with_defaults_without_torch_or_ray(tmp_path, cache_dir):
    """`convlens show` in a fresh process: the spec as it will run (overrides and every default),
    and neither torch nor Ray imported."""
    spec = write(tmp_path, tiny_spec(tmp_path / "runs", cache_dir))
    script = ("import sys; from convlens.cli import main; code = main(['show', sys.argv[1], 'optim.lr=0.02']); "
              "print('imported:', 'torch' in sys.modules, 'ray' in sys.modules); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", script, str(spec)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": LIB})
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout.split("imported:")[0])
    assert shown["optim"]["lr"] == 0.02 and shown["run"]["eval_batch_size"] == 512  # a default
    assert shown["data"]["color_jitter"] is None and shown["model"]["freeze"] == []
    assert "imported: False False" in out.stdout


def test_bad_spec_exits_2_with_one_line(tmp_path, cache_dir, capsys):
    spec = write(tmp_path, tiny_spec(tmp_path / "runs", cache_dir))
    assert main(["show", str(spec), "optim.lr=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convlens: error: invalid") and "optim.lr = -1" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.parametrize("command", ["analyze", "probe"])
def test_a_refused_checkpoint_stops_analysis_and_probes_before_any_work_in_one_line(
        command, uninterrupted, tmp_path, capsys):
    """A damaged checkpoint among the chosen ones: exit 1 with one line naming its file, checked
    in the driver before any task runs, so nothing is written for the good ones either."""
    import shutil
    run = tmp_path / "damaged"
    # the 2-worker reference (tests/test_train.py's): trained here, early in its group, it is ready
    # when test_multinode compares the two-node run with it in the other pytest -n N process
    shutil.copytree(uninterrupted(run=TWO_WORKERS, **DDP), run)
    chosen = sorted(run.glob("checkpoint_epoch*" if command == "analyze" else "best_epoch*"))[-1]
    weights = next(p for p in chosen.iterdir() if p.suffix == ".pt")
    weights.write_bytes(weights.read_bytes()[:100])
    out = tmp_path / "analysis"
    spec = ({"kind": "analyze", "runs": [str(run)], "epochs": "all", "out": str(out), "methods": ["filters"]}
            if command == "analyze" else {"kind": "probe", "runs": [str(run)], "stages": [1]})
    assert main([command, str(write(tmp_path, spec))]) == 1
    captured = capsys.readouterr()
    ours = [line for line in captured.err.splitlines() if not line.startswith("(")]
    assert len(ours) == 1 and str(weights) in ours[0] and "sha256" in ours[0], ours
    assert not list(out.rglob("*.png")) and not (run / "probes.json").exists()
