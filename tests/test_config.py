"""Bad specs fail before any work, with a message naming the field and the value."""
import pytest
import yaml

from convlens.base.errors import ConfigError
from convlens.specs.base import parse_overrides, validate
from convlens.specs.load import load_job
from convlens.specs.train import TrainJob
from tests.conftest import tiny_spec


def write(tmp_path, spec):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("override, names", [
    ("optim.lr=-0.1", ["optim.lr", "-0.1"]),
    ("optim.lr=0", ["optim.lr"]),
    ("data.batch_size=0", ["data.batch_size"]),
    ("data.batch_size=63", ["data.batch_size = 63", "run.workers = 2"]),
    ("schedule.milestones=[1,5]", ["schedule.milestones", "run.epochs = 2"]),
    ("model.block=foo", ["model.block", "foo"]),
    ("optim.momentum=abc", ["optim.momentum", "abc"]),
    ("optim.lrr=0.1", ["optim.lrr", "unknown field"]),
    ("run.name=../escape", ["run.name"]),
    ("model.layers=[1,1,1,1,1]", ["model.layers"]),
    ("model.freeze=[layer3]", ["model.freeze", "layer3", "2 stages"]),
    ("model.freeze=[head]", ["model.freeze", "head"]),
    ("data.random_resized_crop={scale: [0.5, 1]}", ["data.crop_padding = 4", "random_resized_crop"]),
    ("data.random_resized_crop={scale: [0.5, 2]}", ["scale", "<= 1"]),
    ("data.color_jitter={brightness: 1.5}", ["data.color_jitter.brightness", "1.5"]),
])
def test_bad_values_name_the_field(tmp_path, override, names):
    spec = tiny_spec(tmp_path, str(tmp_path), run={"workers": 2})
    with pytest.raises(ConfigError) as err:
        load_job(write(tmp_path, spec), [override])
    for name in names:
        assert name in str(err.value)


def test_overrides_parse_yaml_values(tmp_path):
    job = load_job(write(tmp_path, tiny_spec(tmp_path, str(tmp_path))),
                   ["optim.lr=0.05", "model.layers=[2,1]", "optim.name=adam"])
    assert job.optim.lr == 0.05 and job.model.layers == [2, 1] and job.optim.name == "adam"


def test_malformed_override_and_missing_spec(tmp_path):
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_overrides(["optim.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_job(tmp_path / "nope.yaml")


def test_kind_mismatch(tmp_path):
    spec = tiny_spec(tmp_path, str(tmp_path))
    with pytest.raises(ConfigError, match="kind"):
        load_job(write(tmp_path, spec), [], kind="sweep")


def test_shipped_specs_validate():
    """Every job and sweep spec the project ships loads as the kind it declares."""
    from pathlib import Path
    from convlens.specs.load import KINDS
    repo = Path(__file__).resolve().parents[1]
    paths = sorted([*(repo / "jobs").glob("*.yaml"), *(repo / "sweeps").glob("*.yaml")])
    assert len(paths) >= 10
    for path in paths:
        kind = yaml.safe_load(path.read_text()).get("kind", "train")
        assert isinstance(load_job(path), KINDS[kind]), path
