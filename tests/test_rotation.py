"""RotNet batches and feature probes."""
import json

import torch

from convlens.analysis.knn import knn_classify
from convlens.analysis.probes import fit_probe, probe_run
from convlens.models.resnet import ResNet
from convlens.specs.probe import ProbeJob
from convlens.training.tasks import prepare, rotate_batch


def test_rotated_batch_labels_and_four_rotations_return_the_image():
    x = torch.randn(3, 1, 8, 8)
    rotated, labels = rotate_batch(x)
    assert rotated.shape == (12, 1, 8, 8)
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for k in range(4):
        block = rotated[k * 3:(k + 1) * 3]
        # undoing k quarter turns with 4 - k more returns the original image
        assert torch.equal(torch.rot90(block, 4 - k, dims=(2, 3)), x)
        assert torch.equal(block, torch.rot90(x, k, dims=(2, 3)))
    y = torch.tensor([7, 7, 7])
    _, targets = prepare("rotation", x, y)
    assert 7 not in targets.tolist()  # class labels are never read


def test_knn_equals_brute_force_vote():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(50, 6, generator=g), torch.randn(7, 6, generator=g)
    labels = torch.randint(0, 3, (50,), generator=g)
    preds = knn_classify(train, labels, test, k=5, temperature=0.1, num_classes=3, chunk=3)
    for i in range(7):
        sims = [float(torch.dot(test[i], t) / (test[i].norm() * t.norm())) for t in train]
        top = sorted(range(50), key=lambda j: -sims[j])[:5]
        votes = [0.0] * 3
        for j in top:
            votes[int(labels[j])] += torch.tensor(sims[j] / 0.1).exp().item()
        assert int(preds[i]) == max(range(3), key=lambda c: votes[c])


def test_probe_never_updates_the_frozen_backbone(demo, tmp_path):
    """Probes of the reduced demo's rotation network (a copy: the demo's folder is read by other tests)."""
    import shutil
    from convlens.storage import checkpoint as ckpt
    run_dir = tmp_path / "rotation"
    shutil.copytree(demo.root / "rotation", run_dir)
    (run_dir / "probes.json").unlink()  # the demo's own probes: these must be this test's
    folder = ckpt.best_checkpoint(run_dir)
    before = {k: v.clone() for k, v in ckpt.load_checkpoint(folder)["model"].items()}
    result = probe_run(run_dir, ProbeJob(runs=[str(run_dir)], stages=[1, 2], probe_epochs=2, max_train=512))
    after = ckpt.load_checkpoint(folder)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert set(result["stages"]) == {"1", "2"} and result["task"] == "rotation"
    assert json.loads((run_dir / "probes.json").read_text()) == result
    for m in result["stages"].values():
        assert 0 <= m["knn_accuracy"] <= 1 and 0 <= m["linear_accuracy"] <= 1


def test_probe_training_leaves_backbone_parameters_unchanged():
    model = ResNet([1, 1], 8, in_chans=1, num_classes=4)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    from convlens.analysis.probes import extract
    x = torch.randint(0, 255, (32, 1, 16, 16), dtype=torch.uint8)
    feats = extract(model, [(x, torch.zeros(32, dtype=torch.int64))], [2], 1, lambda batch: batch.float() / 255)[0][2]
    fit_probe(torch.nn.Linear(feats.shape[1], 3), feats, torch.randint(0, 3, (32,)), 2, 0)
    assert all(torch.equal(snapshot[k], v) for k, v in model.state_dict().items())
