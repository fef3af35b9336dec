"""`convlens sweep`: the trials of a search space, each a Ray Train run, under Ray Tune or as a
Slurm job array, and the sweep's outputs:

    space.py        the trials of a sweep, drawn once with the sweep's seed (the same in both modes)
    search.py       how a Tune sweep picks and schedules trials: the searcher and the scheduler
    trial.py        one trial: its TrainJob, the Tune trial function, the Train -> Tune report
    pbt.py          the trial's side of PBT: Tune checkpoints, starts from a donor's checkpoint
    tune_runner.py  a sweep's trials under Ray Tune
    status.py       what a sweep shows while it runs, in place of Tune's tables
    array.py        `convlens submit --array`: the trials as a Slurm job array, and gathering them
    results.py      the sweep's outputs: trials.csv, the printed table, best_job.yaml, curves.png
"""
