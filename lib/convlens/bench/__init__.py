"""Benchmarks that print figures (and assert nothing): the training input pipeline
(`convlens bench`, pipeline.py), scaling of real training runs (scaling.py), the analysis
methods (analysis.py) and t-SNE implementations (tsne.py)."""
