"""A look inside trained checkpoints: filters, feature maps, deconvnet, inversion, CAMs,
embeddings, kNN retrieval and error analysis, each a registered method run as a Ray task.

Every method module computes numpy arrays (`compute(ctx) -> dict`) and draws them
separately (`draw(result, ctx) -> [Panel]`); `registry.METHODS` lists them by name.
"""
