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

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
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
        return pbt(job, epochs)
    return FIFOScheduler()


def asha(sched, epochs: int):
    """ASHA with its rungs before the last epoch only: a trial judged at its last epoch has paid
    for every epoch already, and stopping it there would cut off its test evaluation. Rungs are
    grace_period * reduction_factor**k up to max_t; trials past max_t run on to their end.
    The sweep spec makes sure grace_period < epochs."""
    from ray.tune.schedulers import ASHAScheduler
    return ASHAScheduler(time_attr="epoch", max_t=epochs - 1, grace_period=sched.grace_period,
                         reduction_factor=sched.reduction_factor, stop_last_trials=False)


def pbt(job: SweepJob, epochs: int):
    """PBT on epochs, perturbing job.perturbed: a perturbed value is redrawn from its space entry
    (resample_probability) or scaled by 0.8 / 1.2 (a choice moves to a neighbour), seeded.
    synch: each trial reaching a perturbation epoch is paused (its actor, Train run included, is
    stopped; it resumes from its own checkpoint) until every live trial has reported that epoch,
    so perturbations happen at the same epochs whatever the trials' speeds; asynchronous PBT
    judges a trial against whatever the others have reported so far."""
    import random
    random.seed(job.seed)  # PBT draws donors and perturbations from Python's random module
    sched = job.scheduler
    mutations = {key: (list(job.space[key].args) if job.space[key].kind in ("choice", "grid")
                       else tune_domain(job.space[key])) for key in job.perturbed}
    return EpochPBT(epochs, time_attr="epoch", perturbation_interval=sched.perturbation_interval,
                    hyperparam_mutations=mutations, quantile_fraction=sched.quantile_fraction,
                    resample_probability=sched.resample_probability, synch=sched.synch, log_config=False)


class EpochPBT(PopulationBasedTraining):
    """Tune's PBT, with two changes for trials that are whole Train runs of a fixed length:
    - no exploit / explore at a trial's last epoch (run.epochs: the base's, or the trial's own
      where the space searches it): the bottom trial would only end as a copy of the top one's
      final model, and synchronous PBT would stop and restart every trial once more for it;
    - synchronous PBT lets waiting trials go on when no live trial can bring the sync about any
      more: Tune's pauses each trial whose epoch reaches the next sync and runs only trials
      below it, so it would wait forever where the others ended first (their last epochs do
      not count) or where the sync came from a later epoch than planned (a resumed sweep's
      trials start from their own checkpoints, at different epochs, under a fresh scheduler)."""

    def __init__(self, epochs: int, **kwargs):
        super().__init__(**kwargs)
        self.epochs = epochs

    def on_trial_result(self, tune_controller, trial, result):
        last = int(trial.config.get("run.epochs", self.epochs))
        if result.get(self._time_attr, 0) >= last:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def choose_trial_to_run(self, tune_controller):
        chosen = super().choose_trial_to_run(tune_controller)
        if chosen is not None or not self._synch:
            return chosen
        live = tune_controller.get_live_trials()
        if any(self._trial_state[t].last_train_time < self._next_perturbation_sync for t in live):
            return None  # one of them will reach the sync
        waiting = [t for t in live if t.status in (Trial.PENDING, Trial.PAUSED)]
        return min(waiting, key=lambda t: self._trial_state[t].last_train_time) if waiting else None
