"""Experiment files of the training area, and the errors bad settings give."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfpipe.config import TrainConfig, load_experiment
from tfpipe.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["kidney", "chexnet"])
def test_shipped_experiments_load(name: str) -> None:
    exp = load_experiment(REPO / "experiments" / f"{name}.yaml")
    assert exp.name == name
    if name == "chexnet":
        assert exp.model.task == "classification" and exp.model.arch == "densenet121"
        assert exp.train.loss == "bce" and exp.data.source == "classification"


def test_set_overrides_reach_model_and_train() -> None:
    exp = load_experiment(
        REPO / "experiments" / "kidney.yaml",
        ["model.arch=linknet", "train.batch_size=16", "train.lookahead.k=3"],
    )
    assert (exp.model.arch, exp.train.batch_size, exp.train.lookahead.k) == ("linknet", 16, 3)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.arch=resnet", "'unet', 'linknet', 'fpn' or 'densenet121'; got model.arch='resnet'"),
        ("train.loss=hinge", "'bce_jaccard', 'bce_dice', 'dice'"),
        ("train.schedule=linear", "'constant', 'cosine', 'warmup_cosine' or 'plateau'"),
        ("train.optimizer=rmsprop", "'adam', 'sgd' or 'adamw'; got train.optimizer='rmsprop'"),
        ("train.backup_freq=0", "backup_freq must be 'epoch' or a number of steps >= 1"),
        ("train.strategy=tpu", "'default', 'mirrored' or 'multi_worker'"),
        ("train.lookahead.alpha=2", "less than or equal to 1; got train.lookahead.alpha=2"),
        ("train.epoch=3", "unknown key 'train.epoch'"),
    ],
)
def test_bad_values_name_key_override_and_allowed_values(override: str, expected: str) -> None:
    path = REPO / "experiments" / "kidney.yaml"
    with pytest.raises(ConfigError) as err:
        load_experiment(path, [override])
    assert expected in str(err.value)
    assert f"from --set {override}" in str(err.value)  # where the value came from


def test_yaml_on_off_for_mixed_precision(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("train:\n  mixed_precision: off\n")
    assert load_experiment(path).train.mixed_precision == "off"
    path.write_text("train:\n  mixed_precision: on\n")
    assert load_experiment(path).train.mixed_precision == "on"


def test_schedule_checks_name_the_keys() -> None:
    from tfpipe.train.optim import make_schedule

    # The config rejects it when loaded; the schedule keeps its own guard.
    cfg = TrainConfig.model_construct(schedule="warmup_cosine", warmup_epochs=3, epochs=3)
    with pytest.raises(ConfigError, match=r"warmup_epochs must be smaller than train\.epochs"):
        make_schedule(cfg, 10, " in x.yaml")
    cfg = TrainConfig(schedule="cosine", learning_rate=1e-3, min_learning_rate=1e-2)
    with pytest.raises(ConfigError, match="min_learning_rate must not exceed"):
        make_schedule(cfg, 10)


def test_warmup_cosine_rises_then_falls() -> None:
    from tfpipe.train.optim import make_schedule

    cfg = TrainConfig(
        schedule="warmup_cosine",
        learning_rate=0.1,
        warmup_epochs=1,
        epochs=3,
        min_learning_rate=0.001,
    )
    schedule = make_schedule(cfg, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 20, 30)]
    assert rates[0] == pytest.approx(0.001)
    assert rates[1] < rates[2] == pytest.approx(0.1)
    assert rates[2] > rates[3] > rates[4] == pytest.approx(0.001)
