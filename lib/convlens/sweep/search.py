"""How a Tune sweep picks and schedules its trials: the searcher (the drawn trials, or Optuna's
TPE) and the scheduler (ASHA, PBT or none), each built from the sweep spec.

random / grid: Tune runs the trials space.draw_trials drew (tune_runner.param_space).
tpe: Optuna's TPE proposes each trial from the results so far, seeded with job.seed; NumberedTPE
numbers its proposals so each trial has an index (its run name) like the drawn ones.
pbt: Population Based Training over the drawn trials: every perturbation_interval epochs a
trial in the bottom quantile continues from a top trial's checkpoint with that trial's values,
its learning rate (momentum, weight decay where searched) perturbed; sweep/pbt.py does the
checkpoint side inside the trial.
"""
from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

from convlens.specs.sweep import SweepJob
from convlens.sweep.space import tune_domain
from convlens.sweep.trial import TRIAL


class NumberedTPE(OptunaSearch):
    """OptunaSearch whose configs carry their trial index (config[TRIAL] = 0, 1, ...). The count
    is an attribute, so OptunaSearch.save keeps it with the study: a resumed sweep counts on."""
    numbered = 0

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            config, self.numbered = {**config, TRIAL: self.numbered}, self.numbered + 1
        return config


def tpe_space(job: SweepJob) -> dict:
    """The Tune domains TPE searches (the spec refuses grid entries with search: tpe)."""
    return {key: tune_domain(dist) for key, dist in job.space.items()}


def searcher(job: SweepJob):
    """Tune's search algorithm: None for random and grid (their trials are drawn up front)."""
    if job.search != "tpe":
        return None
    import optuna
    return NumberedTPE(sampler=optuna.samplers.TPESampler(seed=job.seed))


def scheduler(job: SweepJob, epochs: int):
    """Tune's trial scheduler for scheduler.name; epochs: the base spec's run.epochs."""
    from ray.tune.schedulers import FIFOScheduler
    name = job.scheduler.name
    if name == "asha":
        return asha(job.scheduler, epochs)
    if name == "pbt":
        return pbt(job)
    return FIFOScheduler()


def asha(sched, epochs: int):
    """ASHA with its rungs before the last epoch only: a trial judged at its last epoch has paid
    for every epoch already, and stopping it there would cut off its test evaluation. Rungs are
    grace_period * reduction_factor**k up to max_t; trials past max_t run on to their end.
    The sweep spec makes sure grace_period < epochs."""
    from ray.tune.schedulers import ASHAScheduler
    return ASHAScheduler(time_attr="epoch", max_t=epochs - 1, grace_period=sched.grace_period,
                         reduction_factor=sched.reduction_factor, stop_last_trials=False)


def pbt(job: SweepJob):
    """PBT on epochs, perturbing job.perturbed: a perturbed value is redrawn from its space entry
    (resample_probability) or scaled by 0.8 / 1.2 (a choice moves to a neighbour), seeded."""
    import random
    from ray.tune.schedulers import PopulationBasedTraining
    random.seed(job.seed)  # PBT draws donors and perturbations from Python's random module
    sched = job.scheduler
    mutations = {key: (list(job.space[key].args) if job.space[key].kind in ("choice", "grid")
                       else tune_domain(job.space[key])) for key in job.perturbed}
    return PopulationBasedTraining(time_attr="epoch", perturbation_interval=sched.perturbation_interval,
                                   hyperparam_mutations=mutations, quantile_fraction=sched.quantile_fraction,
                                   resample_probability=sched.resample_probability, log_config=False)
