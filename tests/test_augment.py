"""The batched on-device augmentations against first principles, and N workers seeing exactly
the pixels one worker sees."""
import pytest
import torch

from convlens.data.augment import color_jitter, epoch_plan, grey, random_resized_crop, resize
from convlens.data.images import ImageData
from convlens.specs.train import TrainJob
from convlens.training.trainer import Trainer


def images(n=6, c=3, size=12, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_resized_crop_of_the_whole_image_is_the_image_or_its_mirror():
    x = images()
    whole = torch.tensor([[1.0, 1.0, 0.5, 0.5]]).repeat(len(x), 1)
    flips = torch.tensor([False, True] * 3)
    out = random_resized_crop(x, whole, flips, size=12)
    expected = torch.where(flips[:, None, None, None], x.flip(3), x)
    assert torch.allclose(out, expected, atol=1e-5)


def test_resized_crop_of_a_box_is_that_box_resampled():
    """The top-left quarter of an image, sampled back to full size, equals bilinear upsampling
    of that quarter (what torchvision's resized crop does)."""
    x = images(size=16)
    box = torch.tensor([[0.5, 0.5, 0.25, 0.25]]).repeat(len(x), 1)
    out = random_resized_crop(x, box, torch.zeros(len(x), dtype=torch.bool), size=16)
    quarter = x[:, :, :8, :8]
    ref = torch.nn.functional.interpolate(quarter, size=(16, 16), mode="bilinear", align_corners=False)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # borders differ only in edge padding
    assert torch.allclose(out[inner], ref[inner], atol=1e-5)


def test_resized_crop_boxes_respect_scale_and_ratio():
    plan = epoch_plan(2000, 0, False, seed=0, epoch=1, rrc=((0.2, 0.6), (0.75, 4 / 3)))
    w, h, cx, cy = plan.boxes.unbind(1)
    area, ratio = w * h, w / h
    assert area.min() >= 0.2 - 1e-6 and area.max() <= 0.6 + 1e-6
    assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()


def test_color_jitter_follows_torchvision_formulas():
    x = images()
    one = torch.ones(len(x), 3)
    assert torch.allclose(color_jitter(x, one), x, atol=1e-6)
    b = torch.tensor([[1.3, 1.0, 1.0]]).repeat(len(x), 1)
    assert torch.allclose(color_jitter(x, b), (x * 1.3).clamp(0, 1), atol=1e-6)
    s = torch.tensor([[1.0, 1.0, 0.0]]).repeat(len(x), 1)  # saturation 0: grey in every channel
    assert torch.allclose(color_jitter(x, s), grey(x).expand_as(x), atol=1e-6)
    c = torch.tensor([[1.0, 0.0, 1.0]]).repeat(len(x), 1)  # contrast 0: each image its mean grey
    assert torch.allclose(color_jitter(x, c), grey(x).mean((1, 2, 3), keepdim=True).expand_as(x), atol=1e-6)
    import torchvision.transforms.v2.functional as TF
    ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[0], 0.8), 1.2), 0.7)
    assert torch.allclose(color_jitter(x[:1], torch.tensor([[0.8, 1.2, 0.7]]))[0], ref, atol=1e-5)


def test_resize_to_224():
    assert resize(images(2, 1, 28), 224).shape == (2, 1, 224, 224)


@pytest.mark.parametrize("augmentation", [
    {"resize": 32},
    {"crop_padding": 0, "random_resized_crop": {"scale": [0.3, 1.0]}, "color_jitter": {}, "resize": 20},
])
def test_two_workers_see_the_pixels_one_worker_sees(tmp_path, augmentation):
    """Rank r of N builds its share of every global batch from the same epoch plan: the shares,
    put together, are bit-identical to one worker's batch."""
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (200, 3, 16, 16), generator=g, dtype=torch.uint8),
                     torch.randint(0, 10, (200,), generator=g), torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
                     torch.zeros(4, dtype=torch.int64), [str(i) for i in range(10)])
    job = TrainJob.model_validate({"run": {"root": str(tmp_path), "epochs": 1},
                                   "data": {"batch_size": 32, **augmentation}, "model": {"layers": [1], "width": 4}})
    one = list(Trainer(job, data).batches(epoch=3))
    shares = [list(Trainer(job, data, rank=r, world=2).batches(epoch=3)) for r in range(2)]
    assert len(one) == len(shares[0]) == len(shares[1]) > 0
    for step, (x, y) in enumerate(one):
        assert torch.equal(x, torch.cat([shares[0][step][0], shares[1][step][0]]))
        assert torch.equal(y, torch.cat([shares[0][step][1], shares[1][step][1]]))
    assert one[0][0].shape[-1] == augmentation["resize"]
