"""The trials of a sweep, drawn once with the sweep's seed: what a Tune sweep runs and what
`convlens submit --array` records, so the same spec and seed give the same trials (and the same
run directories, `<sweep>_trial_<id>`) in both modes.

Grid entries (choice too, with search: grid) form a cartesian product, repeated num_samples
times; every other entry is drawn afresh for each trial by Tune's own samplers, all from one
numpy generator seeded with job.seed.
"""
from __future__ import annotations

import itertools

from convlens.specs.sweep import Distribution, SweepJob


def draw_trials(job: SweepJob) -> list[dict]:
    """The sweep's trial configs (dotted key -> value), trial i at index i."""
    import numpy as np
    rng = np.random.default_rng(job.seed)
    grid = {key: dist.args for key, dist in job.space.items() if dist.is_grid(job.search)}
    drawn = {key: tune_domain(dist) for key, dist in job.space.items() if key not in grid}
    trials = []
    for _ in range(job.num_samples):
        for values in itertools.product(*grid.values()):
            fixed = dict(zip(grid, values))
            trials.append({key: fixed[key] if key in fixed else drawn[key].sample(random_state=rng)
                           for key in job.space})
    return trials


def tune_domain(dist: Distribution):
    """Tune's search domain of a drawn entry; its sample() casts to a plain float / int / listed value."""
    from ray import tune
    if dist.kind == "choice":
        return tune.choice(list(dist.args))
    if dist.kind == "randint":  # hi exclusive, in the spec as in Tune
        return tune.randint(int(dist.args[0]), int(dist.args[1]))
    return getattr(tune, dist.kind)(*dist.args)  # uniform, loguniform


def trial_id(index: int) -> str:
    """A trial's id in both modes: its 5-digit index."""
    return f"{index:05d}"
