"""Benchmarks that print figures (and assert nothing), each run as `python -m convlens.bench.<name>`
(pipeline.py also as `convlens bench`):

    pipeline.py  training images/second of convlens's input pipeline vs the common baseline
    scaling.py   how training cost scales: 2 Ray workers vs 1, dataset size, model width
    stream.py    a streamed image folder (data.stream) vs in memory, and one larger than memory
    asha.py      what ASHA saves: the same seeded trials with ASHA and in full
    search.py    search algorithms compared: random + ASHA, TPE + ASHA and PBT over seeds
    analysis.py  images per second of every analysis method, on a random tiny ResNet
    tsne.py      scikit-learn's t-SNE vs openTSNE on the penultimate features of a checkpoint
"""
