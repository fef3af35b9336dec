"""Distributed training with Ray Train: the worker loop, the driver, and the run's outputs.

    run.py         `convlens train`: validate, start the Ray Train run, write the final figures
    worker.py      the function each Ray Train worker runs, top to bottom
    trainer.py     one worker's training state: data on the device, model, optimizer, history
    streamed.py    the Trainer of a streamed image folder: batches from this rank's Ray Data shards
    resume.py      where a started run continues from, and the record of every start
    tasks.py       the two kinds of supervision: class labels, and rotation prediction
    optim.py       optimizer and learning-rate schedule from the config
    evaluate.py    a model on a (sharded) split: loss, accuracy and per-class accuracy
    precise_bn.py  precise batch-norm statistics before every validation
    syncbn.py      batch norm over the global batch of all DDP workers, for CPU (gloo)
    nonfinite.py   finding a NaN or Inf loss on any worker without making the GPU wait
    dist.py        collectives that are no-ops on one worker
    curves.py      what a run leaves to look at: learning curves and the per-class table
"""
