"""The trial's side of PBT: Tune checkpoints that point at the trial's Train checkpoints, and a
start from another trial's (the donor's) checkpoint.

PBT copies a top trial's latest Tune checkpoint into a bottom trial and restarts it with new
values. Ray Train's report callback forwards metrics only, so the trial runs its Train run in a
thread while its own thread reports each epoch to Tune with a small checkpoint, pointer.json:
{"trial": id, "path": the Train checkpoint folder, "epoch": n}. A trial started from a pointer
of another trial takes that donor's Train checkpoint: its Train run keeps its name (its run
directory), so the trial first drops what that run had registered (Ray Train's snapshot and its
checkpoints: Train would otherwise resume the trial's own), copies the donor's checkpoint (and
best copy) into its run directory and starts from the copy. The model's history comes along:
the trial's metrics.jsonl is then its model's lineage, learning rate per epoch included.
Each such start is a line of perturbations.jsonl: the epoch, the donor, the values now used.
A pointer to the trial itself (a resumed sweep) resumes its own Train run as usual, or, where
the trial took a donor after Tune last saved its state, continues from that donor's copy, and
either way with the values of its last start from a donor, not the older ones Tune restored.
No trial takes a donor at its last epoch (search.EpochPBT): it would only end as a copy.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path

from convlens.base.errors import CheckpointError
from convlens.specs.base import apply_overrides, validate
from convlens.specs.train import TrainJob
from convlens.storage import checkpoint as ckpt
from convlens.storage.files import read_jsonl
from convlens.storage.rundir import RunDir

POINTER = "pointer.json"


def train_with_checkpoints(job: TrainJob, tid: str, perturbed: dict, to_tune) -> dict:
    """Train job (trial tid), reporting each epoch to Tune with a pointer checkpoint; perturbed:
    the PBT-perturbed keys and their values in this trial's config; to_tune(metrics): the scalars
    of an epoch report Tune gets, None for a stop report (sweep/trial.py). Returns the summary."""
    import ray.tune
    from ray.util.queue import Queue
    from convlens.training.run import train
    run, given = RunDir(job.run_dir), ray.tune.get_checkpoint()
    pointer = json.loads((Path(given.path) / POINTER).read_text()) if given is not None else None
    start_from, values = start_point(run, tid, pointer, perturbed)
    if values != perturbed:
        print(f"[convlens] PBT: trial {tid} goes on with the values of its last start from a donor "
              f"(the sweep's saved state predates it): {values_text(values)}", flush=True)
        job = with_values(job, values)
    epochs, outcome = Queue(actor_options={"num_cpus": 0}), {}

    def work():
        try:
            outcome["summary"] = train(job, {"callbacks": [epochs_to_queue(epochs, to_tune)]}, start_from=start_from)
        except BaseException as err:  # noqa: BLE001 - raised again below, in the trial's thread
            outcome["error"] = err
        finally:
            epochs.put(None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while (item := epochs.get()) is not None:
        report(tid, item["metrics"], item["path"])
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["summary"]


def start_point(run: RunDir, tid: str, pointer: dict | None, perturbed: dict) -> tuple[str | None, dict]:
    """Where the trial's Train run starts (a checkpoint folder, or None: its own run resumes
    itself) and the values of the perturbed keys it trains with. pointer: Tune's checkpoint for
    the trial (None before its first report); perturbed: those keys in Tune's config.
    A donor's pointer: start from a copy of the donor's checkpoint, with Tune's values. The
    trial's own pointer, or none: its own run goes on, from the donor copy it took if its Train
    run has registered nothing since, and with the values of its last start from a donor: Tune
    saves its state every 10 s or so, so a sweep killed and resumed may restore the trial's
    config from before that start, while its run directory already carries on from the donor."""
    if pointer is not None and pointer["trial"] != tid:
        return take_donor(run, pointer, perturbed), perturbed
    start_from = None if (run / RunDir.RAY_SNAPSHOT).is_file() else newest_donor_copy(run)
    return start_from, {**perturbed, **current_values(read_perturbations(run.path))}


def current_values(entries: list[dict]) -> dict:
    """The perturbed keys' values the trial's last start from a donor set; {} if it took none."""
    return {k: v for k, v in entries[-1].items() if k not in ("epoch", "from")} if entries else {}


def with_values(job: TrainJob, values: dict) -> TrainJob:
    """The job with these values of dotted keys (and W&B's top-level params)."""
    spec = apply_overrides(job.model_dump(mode="json"), values)
    spec["tracking"]["params"] = {**spec["tracking"].get("params", {}), **values}
    return validate(TrainJob, spec, f"trial run {job.run.name}")


def report(tid: str, metrics: dict, train_checkpoint: str) -> None:
    """One epoch to Tune, with a checkpoint that points at the Train checkpoint (Tune copies it)."""
    import ray.tune
    with tempfile.TemporaryDirectory(prefix="convlens-pointer-") as tmp:
        pointer = {"trial": tid, "path": train_checkpoint, "epoch": metrics["epoch"]}
        (Path(tmp) / POINTER).write_text(json.dumps(pointer))
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(tmp))


def epochs_to_queue(queue, to_tune):
    """A Train UserCallback (it runs in the Train controller) that puts each epoch's metrics (as
    to_tune keeps them) and the path of its Train checkpoint in the trial's queue."""
    from ray.train.v2.api.callback import UserCallback

    class EpochsToQueue(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            forwarded = to_tune(metrics[0])
            if forwarded is not None and checkpoint is not None:
                queue.put({"metrics": forwarded, "path": checkpoint.path})

    return EpochsToQueue()


def take_donor(run: RunDir, pointer: dict, perturbed: dict) -> str:
    """Make the trial's run start from the donor's checkpoint; returns the copy's folder."""
    source = donor_checkpoint(Path(pointer["path"]))
    epoch = ckpt.checkpoint_epoch(source)
    run.path.mkdir(parents=True, exist_ok=True)
    (run / RunDir.RAY_SNAPSHOT).unlink(missing_ok=True)
    for old in [*run.checkpoints(), *run.bests(), *run.path.glob(RunDir.DONOR + "*")]:
        shutil.rmtree(old, ignore_errors=True)
    copy = Path(shutil.copytree(source, run / RunDir.folder_name(RunDir.DONOR, epoch)))
    copy_lineage_best(source, epoch, run)
    record_perturbation(run, {"epoch": epoch, "from": pointer["trial"], **perturbed})
    return str(copy)


def copy_lineage_best(source: Path, epoch: int, run: RunDir) -> None:
    """The best copy of the donor's lineage up to `epoch`, for the trial's final test: the donor's
    best_epoch folder, or the taken checkpoint itself where that epoch was the best (the donor
    may have replaced its older best since)."""
    donor = RunDir(source.parent)
    best = ckpt.best_checkpoint(donor.path)
    if best is not None and ckpt.checkpoint_epoch(best) <= epoch:
        shutil.copytree(best, run / best.name)
        return
    history = [h for h in donor.read_metrics() if h["epoch"] <= epoch]
    if history and min(history, key=lambda h: h["val_error"])["epoch"] == epoch:
        shutil.copytree(source, run / RunDir.folder_name(RunDir.BEST, epoch))


def newest_donor_copy(run: RunDir) -> str | None:
    """The donor checkpoint a trial took before its driver was killed, while its Train run had
    registered nothing since (no snapshot): what perturbations.jsonl says it continues from."""
    copies = sorted(run.path.glob(RunDir.DONOR + "*"), key=RunDir.epoch_of)
    return str(copies[-1]) if copies else None


def donor_checkpoint(path: Path) -> Path:
    """The pointed Train checkpoint; if the donor has pruned it since (run.keep_last), its newest."""
    try:
        ckpt.verify(path)
        return path
    except (CheckpointError, OSError):  # gone or unfinished: any newer one of the donor's will do
        newest = ckpt.latest_verified(path.parent)
        if newest is None:
            raise
        print(f"[convlens] PBT: {path.name} is gone; starting from the donor's {newest.name}", flush=True)
        return newest


def record_perturbation(run: RunDir, entry: dict) -> None:
    """Append a start from a donor, unless it repeats the last one (a resumed sweep's restart)."""
    done = read_perturbations(run.path)
    if not done or done[-1] != entry:
        with open(run / RunDir.PERTURBATIONS, "a") as f:
            f.write(json.dumps(entry) + "\n")


def read_perturbations(run_dir: Path) -> list[dict]:
    """A trial's starts from donors, oldest first: {"epoch", "from", perturbed key: value}."""
    return read_jsonl(Path(run_dir) / RunDir.PERTURBATIONS)


def perturbations_text(entries: list[dict]) -> str:
    """trials.csv's cell: 'epoch 2 from 00001: optim.lr=0.024; ...'."""
    return "; ".join(f"epoch {e['epoch']} from {e['from']}: {values_text(current_values([e]))}" for e in entries)


def values_text(values: dict) -> str:
    """'optim.lr=0.024, optim.weight_decay=0.001'."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
