"""The experiment schema: loading, overrides, and error messages that name key, file and rule."""

from pathlib import Path

import pytest

from tfpipe.config import Experiment, load_experiment
from tfpipe.errors import ConfigError

KIDNEY = Path(__file__).parent.parent / "experiments" / "kidney.yaml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_kidney_yaml_loads_and_matches_the_hubmap_layout():
    exp = load_experiment(KIDNEY)
    assert exp.name == "kidney"
    assert exp.data.images == Path("data/hubmap/train")
    assert exp.data.labels == Path("data/hubmap/train.csv")
    assert exp.data.tile_size // exp.data.downscale == 256


def test_defaults_without_a_file():
    exp = load_experiment(None)
    assert exp.to_dict() == Experiment().to_dict()  # the schema's defaults, nothing else
    assert exp.source_path is None and exp.train.folds == "all"


def test_overrides_parse_yaml_values_and_nest():
    exp = load_experiment(
        KIDNEY,
        ["train.epochs=3", "model.arch=linknet", "train.folds=[0, 2]", "input.augment.flip=false"],
    )
    assert exp.train.epochs == 3
    assert exp.model.arch == "linknet"
    assert exp.train.folds == [0, 2]
    assert exp.input.augment.flip is False


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    p = write(tmp_path, "data:\n  tile_sise: 512\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    assert "data.tile_sise" in str(err.value)
    assert str(p) in str(err.value)


def test_wrong_value_states_the_rule_and_what_was_received(tmp_path):
    p = write(tmp_path, "data:\n  tile_size: 500\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    msg = str(err.value)
    assert "tile_size must be a multiple of 32" in msg
    assert "data.tile_size=500" in msg
    assert str(p) in msg


def test_bad_choice_lists_the_allowed_values(tmp_path):
    p = write(tmp_path, "model:\n  arch: resnet\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    msg = str(err.value)
    assert "model.arch" in msg and "'unet'" in msg and "'linknet'" in msg and "'resnet'" in msg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_experiment(write(tmp_path, "- a\n- b\n"))


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        load_experiment(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        load_experiment(None, ["train.epochs=3", "train.epochs.x=1"])


def test_resolved_config_round_trips(tmp_path):
    exp = load_experiment(KIDNEY, ["train.epochs=7"])
    out = tmp_path / "resolved.yaml"
    exp.dump_yaml(out)
    again = load_experiment(out)
    assert again.to_dict() == exp.to_dict()


def test_set_errors_name_the_override_not_the_file():
    with pytest.raises(ConfigError) as err:
        load_experiment(KIDNEY, ["train.epochs=x"])
    msg = str(err.value)
    assert "got train.epochs='x' from --set train.epochs=x" in msg and str(KIDNEY) not in msg
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch' from --set train.epoch=3"):
        load_experiment(KIDNEY, ["train.epoch=3"])


def test_file_errors_still_name_the_file_when_overrides_are_given(tmp_path):
    p = write(tmp_path, "train:\n  epochs: x\n")
    with pytest.raises(ConfigError, match=rf"got train.epochs='x' in {p}$"):
        load_experiment(p, ["train.batch_size=4"])


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_file_is_an_error_naming_it(tmp_path, text):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"experiment file {p} is empty: it must hold a mapping"):
        load_experiment(p)


def test_warmup_must_leave_epochs_to_decay():
    # warmup_epochs is pinned: the test must not depend on kidney.yaml's tuning.
    warmup = ["train.schedule=warmup_cosine", "train.warmup_epochs=1"]
    with pytest.raises(ConfigError) as err:
        load_experiment(KIDNEY, [*warmup, "train.epochs=1"])
    msg = str(err.value)
    assert "train.warmup_epochs must be smaller than train.epochs for schedule warmup_cosine" in msg
    assert "got warmup_epochs=1, epochs=1" in msg and "--set train.epochs=1" in msg
    # Other schedules do not warm up, so the setting is free there.
    free = load_experiment(
        KIDNEY, ["train.schedule=constant", "train.warmup_epochs=1", "train.epochs=1"]
    )
    assert free.train.warmup_epochs == free.train.epochs == 1
    exp = load_experiment(KIDNEY, [*warmup, "train.epochs=2"])
    assert exp.train.epochs == 2
