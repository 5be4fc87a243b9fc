"""DenseNet121 multi-label classifier and the 14 → 4 label fine-tune."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from tfpipe.config import ModelConfig
from tfpipe.data import Normalize
from tfpipe.models import build_model
from tfpipe.models.classification import HEAD_LAYER
from tfpipe.models.weights import leaf_layers


def classifier(classes: int, **kwargs: object) -> keras.Model:
    cfg = ModelConfig(task="classification", arch="densenet121", classes=classes, **kwargs)
    return build_model(cfg, (64, 64, 3))


@pytest.mark.slow
def test_fine_tune_14_to_4_labels_loads_everything_but_the_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keras.utils.set_random_seed(0)
    old = classifier(14)
    assert isinstance(old.layers[1], Normalize) and old.output.shape == (None, 14)
    assert old.get_layer("head").dtype_policy.name == "float32"
    old.save(tmp_path / "chexnet14.keras")

    keras.utils.set_random_seed(1)  # a different initialisation, so equality means "loaded"
    with caplog.at_level("WARNING", logger="tfpipe.models.weights"):
        new = classifier(4, init_checkpoint=tmp_path / "chexnet14.keras")
    assert new.output.shape == (None, 4)
    assert f"{HEAD_LAYER}: shapes" in caplog.text  # the skipped head is reported

    old_layers = {layer.name: layer for layer in leaf_layers(old)}
    for layer in leaf_layers(new):
        if layer.name == HEAD_LAYER:
            assert layer.kernel.shape == (1024, 4)
            assert old_layers[HEAD_LAYER].kernel.shape == (1024, 14)
            continue
        for a, b in zip(layer.get_weights(), old_layers[layer.name].get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    probs = new.predict(np.zeros((2, 64, 64, 3), np.uint8), verbose=0)
    assert probs.shape == (2, 4) and np.all((probs > 0) & (probs < 1))  # independent sigmoids
