"""Precise batch norm before validation (training/precise_bn.py), checked against torch's own
torch.optim.swa_utils.update_bn on the same images, in one process without Ray."""
from __future__ import annotations

import copy

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from convlens.data.images import ImageData
from convlens.specs.train import TrainJob
from convlens.training.trainer import Trainer


def random_data(n: int = 640) -> ImageData:
    g = torch.Generator().manual_seed(0)
    return ImageData(torch.randint(0, 256, (n, 1, 12, 12), generator=g, dtype=torch.uint8),
                     torch.randint(0, 10, (n,), generator=g), torch.zeros(8, 1, 12, 12, dtype=torch.uint8),
                     torch.zeros(8, dtype=torch.int64), [str(i) for i in range(10)])


def trainer(tmp_path, freeze=(), **run) -> Trainer:
    job = TrainJob.model_validate({
        "run": {"root": str(tmp_path), "epochs": 1, "precise_bn_images": 256, **run},
        "data": {"batch_size": 64, "val_fraction": 0.1},
        "model": {"layers": [1, 1], "width": 4, "freeze": list(freeze)},
        "optim": {"lr": 0.5}, "schedule": {"name": "constant"}})
    torch.manual_seed(0)
    return Trainer(job, random_data())


def norms(model) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def test_validation_uses_the_statistics_of_the_final_weights(tmp_path):
    t = trainer(tmp_path)
    t.run_epoch(1)
    ours = norms(t.raw_model)
    # torch's implementation on a copy, fed the same 256 training images in the evaluation view
    reference = copy.deepcopy(t.raw_model).train()
    batches = [t.augment.eval(t.train_x[s:s + 64]).contiguous(memory_format=torch.channels_last)
               for s in range(0, 256, 64)]
    torch.optim.swa_utils.update_bn(batches, reference)
    for a, b in zip(ours, norms(reference)):
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
        assert a.momentum == 0.1  # the training average is restored for the next epoch


def test_switched_off_keeps_the_running_averages(tmp_path):
    t = trainer(tmp_path, precise_bn_images=0)
    t.run_epoch(1)
    reference = copy.deepcopy(t.raw_model).train()
    torch.optim.swa_utils.update_bn([t.augment.eval(t.train_x[:256]).contiguous(
        memory_format=torch.channels_last)], reference)
    assert not torch.allclose(norms(t.raw_model)[-1].running_var, norms(reference)[-1].running_var)


def test_frozen_batch_norms_keep_their_statistics(tmp_path):
    frozen = ["stem", "layer1"]
    t = trainer(tmp_path, freeze=frozen)
    parts = [bn for name in frozen for m in t.raw_model.part(name) for bn in m.modules() if isinstance(bn, _BatchNorm)]
    kept = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in parts]
    t.run_epoch(1)
    assert len(parts) == 3  # the stem's and layer1's two
    assert all(torch.equal(a, bn.running_mean) and torch.equal(b, bn.running_var) for (a, b), bn in zip(kept, parts))
    trained = norms(t.raw_model)[-1]  # layer2's: recomputed
    assert not torch.equal(trained.running_var, torch.ones_like(trained.running_var))
