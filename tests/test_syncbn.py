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



def half_batch_gradients(rank: int, port: int, x: torch.Tensor, out: str) -> None:
    """One of 2 gloo workers: GlobalBatchNorm2d on its half of x; its gradients of a loss over the whole batch."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        bn = GlobalBatchNorm2d(3).double().train()
        half = x[rank * 4:(rank + 1) * 4].clone().requires_grad_()
        loss_of(bn(half)).backward()
        weight_grad = bn.weight.grad.clone()
        dist.all_reduce(weight_grad)  # DDP's sum of the parameters' gradients
        torch.save((half.grad, weight_grad), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def loss_of(y: torch.Tensor) -> torch.Tensor:
    return (y * torch.arange(1.0, 4.0, dtype=y.dtype)[None, :, None, None]).pow(2).sum()


def test_two_workers_get_the_gradients_of_one_worker_with_the_whole_batch(tmp_path):
    """The all-reduce's backward: each half batch's input gradient, and the summed weight gradient,
    equal one worker's on the whole batch (what keeps 2-worker DDP equal to 1 worker)."""
    import socket
    import torch.multiprocessing as mp
    x = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    whole = x.clone().requires_grad_()
    bn = GlobalBatchNorm2d(3).double().train()
    loss_of(bn(whole)).backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(half_batch_gradients, args=(port, x, str(tmp_path)), nprocs=2, join=True)
    (g0, w0), (g1, w1) = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert torch.allclose(torch.cat([g0, g1]), whole.grad, rtol=0, atol=1e-12)
    assert torch.allclose(w0, bn.weight.grad, rtol=0, atol=1e-12) and torch.equal(w0, w1)
