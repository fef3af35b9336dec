"""The benchmark runs at smoke size and reports all three throughputs (figures are not asserted)."""
from convlens.bench import BenchJob, run_bench
from convlens.config import DataConfig
from tests.conftest import FMNIST


def test_bench_smoke(cache_dir, tmp_path):
    job = BenchJob(data=DataConfig(path=str(FMNIST), train_subset=512, cache_dir=cache_dir),
                   batch_size=32, steps=2, warmup=1, loader_workers=0, out=str(tmp_path / "bench.json"))
    result = run_bench(job)
    for key in ("model_only", "convlens", "dataloader_pil", "speedup_vs_baseline"):
        assert result[key] > 0
    assert (tmp_path / "bench.json").is_file()
