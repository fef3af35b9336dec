"""The `convlens` command: one subcommand per job kind, each a spec file plus dotted overrides."""
from __future__ import annotations

import argparse
import sys

from convlens.config import ConfigError, load_job


def cmd_train(args):
    from convlens.training.run import train
    job = load_job(args.spec, args.overrides, "train")
    return train(job)


def cmd_sweep(args):
    from convlens.tuning import collect_array, sweep
    job = load_job(args.spec, args.overrides, "sweep")
    if args.collect:
        return collect_array(job)
    return sweep(job, resume=args.resume)


def cmd_analyze(args):
    from convlens.analysis.job import analyze
    return analyze(load_job(args.spec, args.overrides, "analyze"))


def cmd_report(args):
    from convlens.report import write_report
    path = write_report(args.paths, out=args.out)
    print(f"[convlens] report written: {path}")
    return path


def cmd_probe(args):
    from convlens.probes import probe
    return probe(load_job(args.spec, args.overrides, "probe"))


def cmd_demo(args):
    from convlens.demo import run_demo
    return run_demo(load_job(args.spec, args.overrides, "demo"))


def cmd_bench(args):
    from convlens.bench import run_bench
    return run_bench(load_job(args.spec, args.overrides, "bench"))


def cmd_submit(args):
    from convlens.launch.slurm import submit
    return submit(args.cluster, args.kind, args.spec, args.overrides, wait=args.wait, array=args.array)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convlens", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def job(name, func, help_):
        s = sub.add_parser(name, help=help_)
        s.add_argument("spec", help="job spec (YAML)")
        s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.05")
        s.set_defaults(func=func)
        return s

    job("train", cmd_train, "train one network with Ray Train")
    sw = job("sweep", cmd_sweep, "search training configs with Ray Tune").add_mutually_exclusive_group()
    sw.add_argument("--resume", action="store_true", help="continue an interrupted sweep, keeping finished trials")
    sw.add_argument("--collect", action="store_true",
                    help="write trials.csv, best_job.yaml and curves.png of a `submit --array` sweep")
    job("analyze", cmd_analyze, "run analysis methods over checkpoints as Ray tasks")
    job("probe", cmd_probe, "linear, MLP and kNN probes on frozen features of checkpoints")
    job("demo", cmd_demo, "train both networks, sweep, analyze and write the report")
    job("bench", cmd_bench, "measure training and analysis throughput")
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
    from convlens.errors import USER_ERRORS
    try:
        args.func(args)
    except USER_ERRORS as err:
        print(f"convlens: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convlens: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
