"""The `convlens` command: one subcommand per job kind, each a spec file plus dotted overrides."""
from __future__ import annotations

import argparse
import sys

from convlens.errors import ConvlensError


def cmd_job(args):
    from convlens.dispatch import run_job
    return run_job(args.command, args.spec, args.overrides, resume=getattr(args, "resume", False),
                   collect=getattr(args, "collect", False))


def cmd_report(args):
    from convlens.report.page import write_report
    path = write_report(args.paths, out=args.out)
    print(f"[convlens] report written: {path}")
    return path


def cmd_submit(args):
    from convlens.launch.slurm import submit
    return submit(args.cluster, args.kind, args.spec, args.overrides, wait=args.wait, array=args.array)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convlens", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def job(name, help_):
        s = sub.add_parser(name, help=help_)
        s.add_argument("spec", help="job spec (YAML)")
        s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.05")
        s.set_defaults(func=cmd_job)
        return s

    job("train", "train one network with Ray Train")
    sw = job("sweep", "search training configs with Ray Tune").add_mutually_exclusive_group()
    sw.add_argument("--resume", action="store_true", help="continue an interrupted sweep, keeping finished trials")
    sw.add_argument("--collect", action="store_true",
                    help="write trials.csv, best_job.yaml and curves.png of a `submit --array` sweep")
    job("analyze", "run analysis methods over checkpoints as Ray tasks")
    job("probe", "linear, MLP and kNN probes on frozen features of checkpoints")
    job("demo", "train both networks, sweep, analyze and write the report")
    job("bench", "measure training and analysis throughput")
    r = sub.add_parser("report", help="write one self-contained HTML report")
    r.add_argument("paths", nargs="+", help="run, sweep or analysis directories")
    r.add_argument("--out", default=None, help="report file (default: next to the first path)")
    r.set_defaults(func=cmd_report)
    s = sub.add_parser("submit", help="send a job to Slurm with submitit")
    s.add_argument("--cluster", required=True, help="cluster profile (YAML), e.g. slurm/local.yaml")
    s.add_argument("--wait", action="store_true", help="follow the job and exit with its status")
    s.add_argument("--array", action="store_true", help="sweep: one Slurm array task per trial")
    s.add_argument("kind", choices=["train", "sweep", "analyze", "demo"])
    s.add_argument("spec")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(func=cmd_submit)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConvlensError as err:
        print(f"convlens: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("convlens: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
