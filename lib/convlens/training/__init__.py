"""Distributed training with Ray Train: the worker loop, the driver, and the run's outputs."""
