"""Typed job specs: YAML file + dotted overrides, validated before any work starts.

One pydantic model per job kind (train, sweep, analyze, probe, demo, bench) and the Slurm
cluster profile; unknown keys, wrong types and impossible values raise ConfigError naming the
field. Nothing here imports torch or Ray, so `convlens show` and the report start fast.

    base.py     what every spec shares: strict models, YAML reading, dotted overrides, errors
    load.py     any job spec from its file: read, override, validate as the kind it declares
    train.py    the train job: run, data, model, optimizer, schedule and tracking sections
    sweep.py    the sweep job: a base train spec, the space searched, how trials are scheduled
    analyze.py  the analyze job: which runs and checkpoints, which methods, and their knobs
    probe.py    the probe job: linear, MLP and kNN probes on frozen features
    demo.py     the demo job: a pipeline of other jobs' specs
    bench.py    the bench job: throughput of the input pipeline vs the common baseline
    cluster.py  a cluster profile (slurm/*.yaml): the Slurm allocation and the Python it runs
"""
