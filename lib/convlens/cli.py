"""The `convlens` command: one subcommand per job kind, each a spec file plus dotted overrides.

Exit status: 0 success; 1 the job ran and failed (a NaN stop, retries exhausted, a refused
checkpoint, a failed Slurm job, a dataset download that failed); 2 a bad spec, override, path or
command line.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback

from convlens.base.errors import ERROR_PREFIX, ConvlensError

COMMANDS = {  # name -> (one-line help, description, example)
    "train": ("train one network with Ray Train",
              "Train (or resume, by run.name) one ResNet with Ray Train: run.workers DDP workers on CPUs or "
              "GPUs, a checkpoint per epoch, the best by validation error, and the test accuracy of the best at "
              "the end, all in <run.root>/<run.name>/.",
              "convlens train jobs/fmnist_resnet.yaml optim.lr=0.05 run.epochs=3"),
    "sweep": ("search training configs with Ray Tune",
              "Search the space of a sweep spec with Ray Tune, every trial a full Ray Train run; ASHA stops weak "
              "trials early. Writes trials.csv, best_job.yaml (a ready train spec) and curves.png.",
              "convlens sweep sweeps/fmnist_small.yaml num_samples=8"),
    "analyze": ("run analysis methods over checkpoints as Ray tasks",
                "Look inside checkpoints: filters, feature maps, deconvnet, CAM, Grad-CAM, guided backprop, "
                "embeddings, kNN and more, one Ray task per checkpoint and method; writes PNGs, JSON numbers "
                "and index.json.",
                "convlens analyze jobs/analyze_demo.yaml 'runs=[runs/demo/supervised]' epochs=last"),
    "probe": ("linear, MLP and kNN probes on frozen features of checkpoints",
              "Fit linear and MLP probes and a kNN classifier on frozen features of each run's best "
              "checkpoint, stage by stage, and print the table (probes.json in each run).",
              "convlens probe jobs/probe.yaml 'runs=[runs/demo/supervised,runs/demo/rotation]'"),
    "demo": ("train both networks, sweep, analyze and write the report",
             "The whole pipeline: the supervised and the rotation network, their probes, a small sweep, "
             "the analysis and one HTML report.",
             "convlens demo jobs/demo.yaml root=runs/my_demo"),
    "bench": ("measure training input-pipeline throughput",
              "Images per second of the training step fed three ways: a fixed batch (the pure step), convlens's "
              "on-device pipeline, and a torchvision DataLoader of PIL images. Prints figures.",
              "convlens bench jobs/bench_pipeline.yaml device=cuda"),
    "fetch-data": ("download and verify the datasets a spec trains on",
                   "Download every dataset the spec trains on (a train job's, a sweep's base, a demo's networks, a "
                   "bench's) into its data.path where it is missing, and verify the content of every file; one "
                   "line per dataset. Run it where there is internet (a login node) before submitting to compute "
                   "nodes without.",
                   "convlens fetch-data jobs/cifar10_resnet18.yaml"),
    "show": ("print a spec resolved, with every default",
             "Validate a spec with its overrides and print it as the job will run it, defaults included; "
             "starts neither torch nor Ray.",
             "convlens show jobs/fmnist_resnet.yaml optim.lr=0.05"),
}


def cmd_job(args):
    from convlens.jobs.dispatch import run_job
    return run_job(args.command, args.spec, args.overrides, resume=getattr(args, "resume", False),
                   collect=getattr(args, "collect", False))


def cmd_show(args):
    import yaml
    from convlens.specs.load import load_job
    job = load_job(args.spec, args.overrides)
    print(yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False), end="")


def cmd_fetch_data(args):
    from convlens.jobs.dispatch import fetch_data
    return fetch_data(args.spec, args.overrides)


def cmd_report(args):
    if args.markdown or args.into:
        return cmd_markdown(args)
    from convlens.report.page import write_report
    path = write_report(args.paths, out=args.out)
    print(f"[convlens] report written: {path}")
    return path


def cmd_markdown(args):
    """The README's results block: printed, written to --out, or put between the markers of --into."""
    from pathlib import Path
    from convlens.base.errors import ConfigError
    from convlens.report.markdown import into, markdown
    if len(args.paths) != 1:
        raise ConfigError("report --markdown: one demo folder (convlens demo's root), e.g. runs/demo")
    block = markdown(args.paths[0], command=markdown_command(args))
    if args.into:
        print(f"[convlens] results block written into {into(block, args.into)}")
    elif args.out:
        Path(args.out).write_text(block, encoding="utf-8")
        print(f"[convlens] results block written: {args.out}")
    else:
        print(block, end="")


def markdown_command(args) -> str:
    """The command line the block says wrote it."""
    return " ".join(["convlens report --markdown", *args.paths, *(["--into", args.into] if args.into else [])])


def cmd_submit(args):
    from convlens.launch.slurm import submit
    return submit(args.cluster, args.kind, args.spec, args.overrides, wait=args.wait, array=args.array,
                  dry_run=args.dry_run)


def cmd_follow(args):
    from convlens.launch.follow import follow_id
    return follow_id(args.cluster, args.job_id)


def cmd_sync(args):
    from convlens.tracking.sync import sync
    sync(args.path, dry_run=args.dry_run)


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed
    try:
        return installed("convlens")
    except PackageNotFoundError:  # run from a source tree that is not installed
        import convlens
        return convlens.__version__


def add_command(sub, name: str, help_: str, description: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose --help has a paragraph and an example; --verbose is accepted after it too."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show Ray's own logs and full tracebacks")
    return sub.add_parser(name, help=help_, description=textwrap.fill(description, 88), parents=[common],
                          epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)


def subcommand(sub, name: str, func) -> argparse.ArgumentParser:
    s = add_command(sub, name, *COMMANDS[name])
    s.set_defaults(func=func)
    return s


def job_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("spec", help="job spec (YAML)")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.05")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convlens", description=__doc__.split("\n\n")[0],
                                epilog="every subcommand has --help with an example")
    p.add_argument("--version", action="version", version=f"convlens {version()}")
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("train", "analyze", "probe", "demo", "bench", "show", "fetch-data"):
        job_arguments(subcommand(sub, name, {"show": cmd_show, "fetch-data": cmd_fetch_data}.get(name, cmd_job)))
    sw = subcommand(sub, "sweep", cmd_job)
    job_arguments(sw)
    mode = sw.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an interrupted sweep, keeping finished trials")
    mode.add_argument("--collect", action="store_true",
                      help="write trials.csv, best_job.yaml and curves.png of a `submit --array` sweep")
    r = add_command(sub, "report", "write one self-contained HTML report",
                    "One HTML page of runs, sweeps and analysis folders, every figure embedded; opens offline. "
                    "With --markdown, the README's results block of a demo folder instead: every number read from "
                    "the demo's files, every comparison computed from them. Starts neither torch nor Ray.",
                    "convlens report runs/demo --out report.html\n  convlens report --markdown runs/demo --into README.md")
    r.add_argument("paths", nargs="+", help="run, sweep or analysis directories (--markdown: one demo folder)")
    r.add_argument("--out", default=None, help="report file (default: next to the first path)")
    r.add_argument("--markdown", action="store_true",
                   help="write the README's results block of a demo folder as markdown (to stdout unless --out)")
    r.add_argument("--into", default=None, metavar="FILE",
                   help="with --markdown: put the block between <!-- results:begin --> and <!-- results:end --> "
                        "in FILE, e.g. README.md")
    r.set_defaults(func=cmd_report)
    y = add_command(sub, "sync", "upload offline W&B runs, one complete run per job",
                    "Upload the offline W&B runs under a folder (a run, a sweep, the demo, a Slurm runs_root) "
                    "with `wandb sync`: of the segments one training run left (attempts, retries, requeues, the "
                    "closing summary) only the newest complete one, which holds every epoch, so W&B shows each "
                    "epoch once. Needs `wandb login` (or WANDB_API_KEY) and network: run it on a login node.",
                    "convlens sync runs/demo")
    y.add_argument("path", help="folder to search for offline runs")
    y.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    y.set_defaults(func=cmd_sync)
    s = add_command(sub, "submit", "send a job to Slurm with submitit",
                    "Validate a job here, then run it on a Slurm allocation of the cluster profile (one node or "
                    "many; a sweep's trials as a job array with --array). A time limit or preemption requeues the "
                    "job, which resumes from its checkpoints.",
                    "convlens submit --cluster slurm/local.yaml --wait train jobs/fmnist_resnet.yaml")
    s.add_argument("--cluster", required=True, help="cluster profile (YAML), e.g. slurm/local.yaml")
    follow = s.add_mutually_exclusive_group()
    follow.add_argument("--wait", action="store_true", help="follow the job and exit with its status")
    follow.add_argument("--dry-run", action="store_true",
                        help="print the batch script and the resolved spec; write and submit nothing (no Slurm needed)")
    s.add_argument("--array", action="store_true", help="sweep: one Slurm array task per trial")
    s.add_argument("kind", choices=["train", "sweep", "analyze", "demo"])
    job_arguments(s)
    s.set_defaults(func=cmd_submit)
    f = add_command(sub, "follow", "follow a submitted Slurm job to its end",
                    "Follow a job `convlens submit` queued: its state changes, rank 0's progress and epoch lines "
                    "as they are written, and one line of its outcome from the run's files; exits 0 or 1 as the "
                    "job did. Ctrl-C stops following, not the job.",
                    "convlens follow 1234 --cluster slurm/local.yaml")
    f.add_argument("job_id", help="the Slurm job id submit printed")
    f.add_argument("--cluster", default="slurm/local.yaml", help="the cluster profile it was submitted with")
    f.set_defaults(func=cmd_follow)
    return p


def user_error(err: BaseException) -> ConvlensError | None:
    """The convlens error behind err, also when it was raised inside a Ray task or actor."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ConvlensError):
            return err
        err = getattr(err, "cause", None) or err.__cause__
    return None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ["CONVLENS_VERBOSE"] = "1"
    from convlens.raycluster.env import prepare_environment  # before anything imports ray
    prepare_environment()
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("convlens: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line for a user's error, a traceback for a bug
        known = user_error(err)
        if known is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"{ERROR_PREFIX}{known}", file=sys.stderr)
        return known.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
