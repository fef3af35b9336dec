"""Typed job specs: YAML file + dotted overrides, validated before any work starts.

One pydantic model per job kind (train, sweep, analyze, probe, demo, bench) and the Slurm
cluster profile; unknown keys, wrong types and impossible values raise ConfigError naming the
field. Nothing here imports torch or Ray, so `convlens show` and the report start fast.
"""
