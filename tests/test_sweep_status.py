"""What a sweep shows while it runs: its status line and one line per trial end, no Tune boxes."""
from __future__ import annotations

import re
from collections import Counter

from convlens.sweep.status import (TrialView, ending, error_line, log_line, status_text, trial_line,
                                   trial_state)

BOXES = ("╭", "│", "├", "╰", "+----", "+====")


def test_trial_view_counts_reported_epochs_and_the_best_accuracy():
    view = TrialView(planned=4)
    for result in ({"epoch": 1, "val_accuracy": 0.7}, {"epoch": 2, "val_accuracy": 0.82},
                   {"epoch": 3, "val_accuracy": 0.8}):
        view.add(result)
    assert (view.epochs, view.best) == (3, 0.82)
    view.add({"stop_reason": "non-finite loss at epoch 4", "val_error": 1.0, "epoch": 4})  # planned, not trained
    assert (view.epochs, view.best) == (3, 0.82)
    view.add({"epoch": 4, "val_error": 0.1, "best_val_accuracy": 0.9, "test_accuracy": 0.88})  # run_trial's last
    assert (view.epochs, view.best) == (4, 0.9)
    assert (TrialView(planned=2).epochs, TrialView(planned=2).best) == (0, None)


def test_ending_tells_finished_from_stopped():
    final = {"epoch": 4, "val_error": 0.1, "best_val_accuracy": 0.9, "test_accuracy": 0.88}
    assert ending(final, "asha") == ("finished", "finished")
    assert ending({"epoch": 2, "val_error": 0.3, "val_accuracy": 0.7}, "asha") == \
        ("stopped", "stopped by ASHA after epoch 2")
    assert ending({"stop_reason": "non-finite loss at epoch 1", "epoch": 4}, "asha") == \
        ("stopped", "stopped: non-finite loss at epoch 1")
    assert trial_state("TERMINATED", final) == "finished"
    assert trial_state("TERMINATED", {"epoch": 2, "val_accuracy": 0.7}) == "stopped"
    assert [trial_state(s, {}) for s in ("RUNNING", "PENDING", "PAUSED", "ERROR")] == \
        ["running", "pending", "pending", "failed"]


def test_error_line_is_the_named_error_of_a_traceback():
    text = ("Failure # 1 (occurred at 2026-01-01_00-00-00)\n"
            "ray::ImplicitFunc.train() (pid=1, ip=10.0.0.1)\n"
            "  File \"trial.py\", line 88, in run_trial\n"
            "    summary = train(job)\n"
            "convlens.base.errors.JobFailed: run s_trial_00003 failed after 0 retries (run.max_failures): "
            "rank 0: ValueError: boom\n")
    assert error_line(text) == ("convlens.base.errors.JobFailed: run s_trial_00003 failed after 0 retries "
                                "(run.max_failures): rank 0: ValueError: boom")
    assert error_line("something odd\nno name here\n") == "no name here"
    assert error_line("") == "(no message)"
    assert error_line("ValueError: " + "x" * 500, width=40) == "ValueError: " + "x" * 25 + "..."


def test_trial_and_status_lines():
    drawn = {"optim.lr": 0.051234567, "schedule.milestones": [2], "data.batch_size": 64}
    assert trial_line("00002", drawn, 0.84123, "stopped by ASHA after epoch 2") == (
        "trial 00002 (optim.lr=0.05123, schedule.milestones=[2], data.batch_size=64): "
        "best val acc 0.8412, stopped by ASHA after epoch 2")
    assert trial_line("00003", drawn, None, "failed: ValueError: boom").endswith(
        ": no validation, failed: ValueError: boom")
    counts = Counter({"running": 2, "pending": 1, "stopped": 1})
    assert status_text(counts, (0.84123, "00002")) == \
        "2 running, 1 pending, 0 finished, 1 stopped; best val acc 0.8412 (trial 00002)"
    assert status_text(Counter({"finished": 3, "failed": 1}), None) == \
        "0 running, 3 finished, 0 stopped, 1 failed; no validation yet"
    assert log_line("demo", 150, 6, 16, "text") == "sweep demo [02:30]: 6 of 16 epochs, text"


def assert_compact_status(lines: list[str], trials: dict[str, dict], epochs_per_trial: int) -> None:
    """A sweep's output as a log file has it (tests/test_sweep.py's ASHA sweep): no Tune box, one
    line per trial end with how it ended and its best accuracy, and a bounded number of lines."""
    assert not [line for line in lines if any(box in line for box in BOXES)], "\n".join(lines)
    ends = {m.group(1): line for line in lines if (m := re.match(r"\[convlens\] trial (\d{5}) \(optim.lr=", line))}
    assert sorted(ends) == sorted(trials), "\n".join(lines)
    for tid, row in trials.items():
        words = "finished" if row["status"] == "completed" else "stopped by ASHA after epoch "
        assert words in ends[tid] and f"best val acc {float(row['best_val_accuracy']):.4f}" in ends[tid], \
            (row, ends[tid])
    assert any("stopped by ASHA" in line for line in ends.values())
    # the status lines (a first one and one per 30 s), one per trial end, and the closing table
    # (a head and a row per trial), the epochs saved, the best trial and where the outputs are
    # (lines Ray forwards from its processes, "(raylet) ..." or "(pid=...) ...", are Ray's to make)
    n = len(trials)
    ours = [line for line in lines if not line.startswith("(")]
    assert len(ours) <= 4 + n + 1 + n + 3 + 4, "\n".join(lines)
    assert any(f"of {n * epochs_per_trial} epochs" in line for line in lines if line.startswith("[convlens] sweep"))
