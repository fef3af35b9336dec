"""W&B: everything convlens sends to it or reads of its files.

    run.py      opening one W&B run, the same way for every job: the mode, the run id of a
                run directory, the offline fallback, checkpoints as `model-<run id>` artifacts
    tracker.py  the training run's tracker (a NullTracker, or a WandbTracker on rank 0), the
                driver's segment, open for the whole job offline, and its closing write
    jobs.py     the runs of the analysis, probe and sweep jobs, linked to the training run they
                read, open from the job's start to its end; what the probe and sweep runs log
    media.py    the analysis run of each analysed training run: figures, scalars, tables per epoch
    console.py  rank 0's console, kept in files of its own where a SIGKILL cannot lose it
    segments.py the offline segments of one run id: the closing one (a training driver's, or
                a job's own) takes in every earlier one's system metrics and the console files'
                output, and the job's runtime
    sync.py     `convlens sync`: upload each offline run's complete segment

The rest of convlens reaches W&B only through these functions, and no module outside this
package imports wandb (tests/test_layers.py checks both):
    tracker.open_tracker, tracker.open_driver, tracker.close_run, tracker.wandb_run_id,
    run.tracking_mode, jobs.open_linked_runs, jobs.open_sweep_run, jobs.close_job,
    jobs.log_probe, jobs.log_sweep, media.log_analysis, sync.sync
wandb itself is imported inside functions only: a disabled run and the CLI's start never load it.
"""
