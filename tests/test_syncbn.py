"""The batch norm a model.sync_bn run trains with, against float64 first principles."""
import pytest
import torch

from convlens.training.syncbn import GlobalBatchNorm2d, convert_to_global_bn


@pytest.mark.parametrize("channels_last", [False, True])
def test_global_batch_norm_statistics_are_exact_to_float32(channels_last):
    """One worker's batch statistics as float64 would give them (torch's own channels_last CPU
    kernel is about 30x less exact on AVX2, which broke 1-vs-2-worker equality); same
    semantics as nn.BatchNorm2d."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, 28, 28, generator=g) * 0.5 + 1.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bn = GlobalBatchNorm2d(8).train()
    y = bn(x)
    xd = x.double()
    mean, var = xd.mean((0, 2, 3)), xd.var((0, 2, 3), unbiased=False)
    ref = (xd - mean[None, :, None, None]) / torch.sqrt(var + bn.eps)[None, :, None, None]
    assert (y.double() - ref).abs().max() < 2e-6
    n = x.numel() / 8
    assert torch.allclose(bn.running_var.double(), 0.9 + 0.1 * var * n / (n - 1), rtol=0, atol=1e-7)
    assert torch.allclose(bn.running_mean.double(), 0.1 * mean, rtol=0, atol=1e-7)
    torch_bn = torch.nn.BatchNorm2d(8).train()
    assert torch.allclose(torch_bn(x), y, atol=1e-4)
    assert torch.allclose(bn.eval()(x), torch_bn.eval()(x), atol=1e-4)


def test_conversion_keeps_parameters_and_statistics():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    model[1].running_mean.fill_(0.3)
    model[1].weight.data.fill_(2.0)
    convert_to_global_bn(model)
    assert type(model[1]) is GlobalBatchNorm2d
    assert model[1].running_mean.eq(0.3).all() and model[1].weight.eq(2.0).all()
