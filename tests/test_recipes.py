"""The two kidney recipes: kidney.yaml for the real data on a GPU, kidney-cpu.yaml for a CPU.

They must differ only in the sizing (decoder, BatchNorm, batch, schedule,
epochs), share their records, and the demo must train the same thing from
either file, so that `tfpipe demo` (kidney.yaml by default) keeps its CPU
runtime.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tfpipe.config import load_experiment
from tfpipe.demo import CPU_SIZING, demo_overrides
from tfpipe.train.runlog import diff_configs, flatten

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "experiments" / "kidney.yaml"
CPU = REPO / "experiments" / "kidney-cpu.yaml"
SIZING_KEYS = {
    "name",
    "input.batch_size",
    "model.decoder_filters",
    "model.bn_momentum",
    "train.batch_size",
    "train.learning_rate",
    "train.schedule",
    "train.warmup_epochs",
    "train.epochs",
    "train.early_stopping",
    "input.augment.colour_in_model",
}


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")))
def test_every_shipped_experiment_loads_under_its_file_name(path: Path) -> None:
    assert load_experiment(path).name == path.stem


def test_gpu_recipe_uses_the_default_decoder_long_training_and_mixed_precision() -> None:
    exp = load_experiment(GPU)
    assert exp.model.decoder_filters is None and exp.model.bn_momentum is None
    assert exp.train.epochs >= 20 and exp.train.early_stopping is not None
    assert exp.train.mixed_precision == "auto"
    assert "kidney-cpu.yaml" in GPU.read_text()  # it points CPU users to their file


def test_mixed_precision_auto_is_float16_on_a_gpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    from tfpipe.train.trainer import precision_policy

    setting = load_experiment(GPU).train.mixed_precision
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    assert precision_policy(setting) == "float32"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    assert precision_policy(setting) == "mixed_float16"


def test_recipes_differ_only_in_sizing_and_share_their_records() -> None:
    gpu, cpu = load_experiment(GPU), load_experiment(CPU)
    changed = {line.split(":")[0] for line in diff_configs(gpu.to_dict(), cpu.to_dict())}
    assert changed == SIZING_KEYS
    assert gpu.data == cpu.data  # one build-records serves both
    assert cpu.model.decoder_filters == [64, 32, 16, 16, 8] and cpu.model.bn_momentum == 0.9
    assert cpu.train.epochs < gpu.train.epochs


def test_demo_trains_the_same_thing_from_either_recipe(tmp_path: Path) -> None:
    sections = ("data", "input", "model", "train", "predict", "bench")
    from_gpu = load_experiment(GPU, demo_overrides(tmp_path)).to_dict()
    from_cpu = load_experiment(CPU, demo_overrides(tmp_path)).to_dict()
    assert {s: from_gpu[s] for s in sections} == {s: from_cpu[s] for s in sections}


def test_demo_cpu_sizing_is_the_cpu_recipes() -> None:
    cpu = flatten(load_experiment(CPU).to_dict())
    demo = flatten(load_experiment(GPU, CPU_SIZING).to_dict())
    keys = [item.split("=")[0] for item in CPU_SIZING]
    assert {k: demo[k] for k in keys} == {k: cpu[k] for k in keys}
