"""`convlens sweep`: the trials of a search space (space.py), one trial as a Ray Train run
(trial.py), all of them under Ray Tune (tune_runner.py) or as a Slurm job array (array.py),
and the sweep's outputs (results.py)."""
