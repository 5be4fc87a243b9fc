"""Every Keras 3 backend trains on tfpipe.data.load() with Normalize and Augment.

Each backend runs in its own process (``KERAS_BACKEND`` is read once, at
import): a segmentation model (``uint8`` input, Normalize, colour-only
Augment, Conv2D, sigmoid) and a classification model (full geometric and
colour Augment) take a few ``fit`` steps on tiny records; the layer's
``(images, masks)`` path and its agreement with the tf.data engine are
checked on that backend too. The limit is a hang guard, not a timing. The two
backends' processes run side by side (the test machine has 2 cores), started
by one module fixture.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests._data_helpers import write_records

# A hang guard above the subprocess's own limit (240 s), not a timing.
pytestmark = pytest.mark.timeout(300)

SCRIPT = r"""
import json, sys
import numpy as np
import keras
import tensorflow as tf
import tfpipe.data as td
from tfpipe.config import AugmentConfig
from tfpipe.data.augment import N_UNIFORMS, Augmenter, tile_params
from tfpipe.data.colour import TF_NUMPY

segmentation, classification = sys.argv[1:3]
keras.utils.set_random_seed(0)
report = {"backend": keras.backend.backend()}


def fit(model, records, loss):
    model.compile(keras.optimizers.Adam(0.01), loss)
    before = [np.array(w) for w in model.get_weights()]
    train = td.load(records, batch_size=4, seed=1, augment={"flip": False, "rot90": False})
    history = model.fit(train.take(3), epochs=1, verbose=0)
    after = model.get_weights()
    return {
        "loss": float(history.history["loss"][-1]),
        "changed": sum(not np.array_equal(a, b) for a, b in zip(before, after)),
        "weights": len(after),
    }


inputs = keras.Input((32, 32, 3), dtype="uint8")
x = td.Normalize()(inputs)
x = td.Augment(brightness=0.1, contrast=0.1, noise_std=2.0, flip=False, rot90=False,
               value_range=(0, 1), seed=1)(x)
x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
report["segmentation"] = fit(keras.Model(inputs, outputs), segmentation, "binary_crossentropy")

inputs = keras.Input((32, 32, 3), dtype="uint8")
x = td.Normalize()(inputs)
x = td.Augment(crop_scale=(0.5, 1.0), size=24, brightness=0.1, contrast=0.1, saturation=0.1,
               hue=0.02, noise_std=2.0, value_range=(0, 1), seed=2)(x)
x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(3, activation="sigmoid")(x)
report["classification"] = fit(keras.Model(inputs, outputs), classification, "binary_crossentropy")

# The same draws through this backend's layer and the tf.data engine.
cfg = AugmentConfig(crop_scale=(0.3, 1.0), brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (8, 40, 40, 3), np.uint8)
masks = rng.integers(0, 3, (8, 40, 40, 1), np.uint8)
draws = rng.random((8, N_UNIFORMS), np.float32)
got, got_masks = td.Augment(cfg, size=32).apply(images, masks, draws)
got, got_masks = keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(got_masks)
aug = Augmenter(cfg, (40, 40), 32)
diff, masks_equal = 0, True
for i in range(8):
    params = aug.prepare(tile_params(aug.spec, tf.constant(draws[i]), TF_NUMPY))
    image, mask = aug.apply(tf.constant(images[i]), tf.constant(masks[i]), params)
    diff = max(diff, int(np.abs(image.numpy().astype(int) - got[i].astype(int)).max()))
    masks_equal &= bool(np.array_equal(mask.numpy(), got_masks[i]))
report["engines"] = {"max_diff": diff, "masks_equal": masks_equal}

pair = td.Augment(flip=True, rot90=True, crop_scale=(0.5, 1.0), seed=3)
out, out_masks = pair((images[:, :32, :32], masks[:, :32, :32]), training=True)
out_masks = keras.ops.convert_to_numpy(out_masks)
report["pair_mask_values"] = sorted(int(v) for v in np.unique(out_masks))
print("REPORT " + json.dumps(report))
"""
BACKENDS = ("jax", "torch")


def run_script(backend: str, records: tuple[Path, Path]) -> subprocess.CompletedProcess:
    """SCRIPT in a fresh process on ``backend`` (a hang fails on the 240 s limit)."""
    env = os.environ | {
        "KERAS_BACKEND": backend,
        "CUDA_VISIBLE_DEVICES": "",
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *map(str, records)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).parent.parent,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """SCRIPT's run on every importable backend, two processes at a time."""
    root = tmp_path_factory.mktemp("backends")
    records = (
        write_records(root / "seg", per_shard=4, positive_every=2),
        write_records(root / "cls", task="classification", per_shard=4),
    )
    present = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {b: pool.submit(run_script, b, records) for b in present}
        return {b: future.result() for b, future in futures.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_trains_on_load_with_normalize_and_augment(backend, runs):
    if backend not in runs:
        pytest.skip(
            f"the {backend} package is not importable; pip install -e '.[test]' installs it"
        )
    done = runs[backend]
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report = json.loads(lines[-1].removeprefix("REPORT "))
    assert report["backend"] == backend
    for task in ("segmentation", "classification"):
        fitted = report[task]
        assert 0.0 < fitted["loss"] < 10.0, fitted  # finite, and a real loss
        assert fitted["changed"] == fitted["weights"], fitted  # every weight moved
    # The same draws give the tf.data engine's tiles: masks exact, bilinear/colour within a level.
    assert report["engines"]["masks_equal"] and report["engines"]["max_diff"] <= 1
    assert report["pair_mask_values"] == [0, 1, 2]
