"""A look inside trained checkpoints: filters, feature maps, deconvnet, inversion, CAMs,
embeddings, kNN retrieval and error analysis, each a registered method run as a Ray task, and
the feature probes (`convlens probe`).

Every method module computes numpy arrays (`compute(ctx) -> dict`) and draws them
separately (`draw(result, ctx) -> [Panel]`); `registry.METHODS` lists them by name.

The analyze job and what every method shares:
    job.py           `convlens analyze SPEC`: every chosen method on every chosen checkpoint, as Ray tasks
    runner.py        one method on one checkpoint: compute, draw, write PNGs and a JSON summary
    registry.py      the methods by name, each with the words the report shows about it
    base.py          what every method starts from: the model, test images, layer hooks, feature passes
    plots.py         drawing only: arrays in, matplotlib figures out, saved atomically as PNG
    tables.py        rows of the analysis tables W&B shows, from a method's raw arrays
The methods (each registers itself):
    filters.py       learned kernels of the first layer and of a deeper conv
    feature_maps.py  activations of one test image after the first and the last stage
    deconv.py        deconvnet projections of activations back to pixel space (Zeiler & Fergus)
    inversion.py     feature inversion: an input whose features match a target image's
    cam.py           CAM, Grad-CAM, guided backpropagation and guided Grad-CAM
    faithfulness.py  deletion and insertion curves of each saliency map, against two baselines
    depth.py         Grad-CAM at every stage side by side, each with its deletion / insertion area
    embeddings.py    penultimate features in two dimensions (t-SNE, PCA) with their trustworthiness
    knn.py           kNN on cosine similarity: the maths (the probes' too) and the retrieval method
    examples.py      hardest and easiest images by loss, the confusion matrix, per-class accuracy
    perturb.py       deletion and insertion curves (RISE), used by faithfulness.py and depth.py
Post-steps of the job, across checkpoints:
    compare.py       comparison pages composed of already written PNGs
    similarity.py    how alike the representations are, by linear CKA
    cka.py           linear CKA with the unbiased HSIC estimator, accumulated over minibatches
    trends.py        the numbers methods declare as their table, gathered over runs and drawn across epochs
The probes:
    probes.py        `convlens probe`: linear, MLP and kNN probes on frozen features of a run's best checkpoint
"""
