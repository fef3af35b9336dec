"""Any job kind run from its spec, in this process:

    dispatch.py  `convlens <kind> SPEC` and a Slurm job alike: validate the spec, run its job;
                 `convlens fetch-data`: every dataset a spec trains on, downloaded and verified
    demo.py      `convlens demo`: train both networks, probe, sweep, analyze and report in one job,
                 each step's wall time in timings.json
"""
