"""The trials of a sweep, drawn up front with the sweep's seed (used by `submit --array`).

Grid entries (choice too, with search: grid) form a cartesian product, repeated num_samples
times; every other entry is drawn afresh for each trial.
"""
from __future__ import annotations

import itertools
import math
import random

from convlens.specs.sweep import SweepJob


def sample_trials(job: SweepJob) -> list[dict]:
    """The sweep's trial configs (dotted key -> value), drawn up front with job.seed, as Tune does:
    grid entries (choice too, with search: grid) form a cartesian product, repeated num_samples
    times; every other entry is drawn afresh for each trial."""
    rng = random.Random(job.seed)
    dists = {key: (dist.kind, dist.args) for key, dist in job.space.items()}
    grid = {key: args for key, (name, args) in dists.items() if job.space[key].is_grid(job.search)}
    trials = []
    for _ in range(job.num_samples):
        for values in itertools.product(*grid.values()):
            fixed = dict(zip(grid, values))
            trials.append({key: fixed[key] if key in fixed else draw(rng, name, args)
                           for key, (name, args) in dists.items()})
    return trials


def draw(rng: random.Random, name: str, args: list):
    if name == "choice":
        return rng.choice(args)
    if name == "uniform":
        return rng.uniform(*args)
    if name == "loguniform":
        return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
    return rng.randrange(int(args[0]), int(args[1]))  # randint: hi exclusive, like Tune's
