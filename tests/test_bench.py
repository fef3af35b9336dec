"""The benchmark runs at smoke size, on real and on CIFAR-shaped data, and reports all three
throughputs (figures are not asserted)."""
import pytest

from convlens.bench.pipeline import run_bench
from convlens.specs.bench import BenchJob
from convlens.specs.train import DataConfig
from conftest import FMNIST


@pytest.mark.parametrize("synthetic", [None, [3, 32, 32]])
def test_bench_smoke(cache_dir, tmp_path, synthetic):
    job = BenchJob(data=DataConfig(path=str(FMNIST), train_subset=512, cache_dir=cache_dir), synthetic=synthetic,
                   batch_size=32, steps=2, warmup=1, loader_workers=0, out=str(tmp_path / "bench.json"))
    result = run_bench(job)
    for key in ("model_only", "convlens", "dataloader_pil", "speedup_vs_baseline"):
        assert result[key] > 0
    assert (tmp_path / "bench.json").is_file()


def test_analysis_bench_smoke():
    from convlens.bench.analysis import main
    rows = main(["--images", "8", "--width", "8", "--methods", "cam", "knn", "embeddings", "faithfulness"])
    assert [r["method"] for r in rows] == ["cam", "knn", "embeddings", "faithfulness"]
    assert all(r["images_per_second"] > 0 and r["draw_s"] > 0 for r in rows)


def test_analysis_bench_against_captum_gives_the_same_maps():
    pytest.importorskip("captum")  # in the `test` extra; skipped only in a venv without it
    from convlens.bench.analysis import main
    (result,) = main(["--images", "16", "--width", "8", "--captum"])
    assert result["max_map_difference"] < 1e-5  # CAM and Grad-CAM equal Captum's LayerGradCam maps
    assert set(result["images_per_second"]) == {"convlens cam", "convlens gradcam", "captum LayerGradCam"}
