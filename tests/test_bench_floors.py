"""The input benchmark's floors: the swapped kernel takes effect, and only while loading."""

from __future__ import annotations

import numpy as np

from benchmarks._input_floors import (
    copy_kernel,
    floor_markdown,
    floor_summary,
    floor_variants,
    null_kernel,
    swapped_kernel,
)
from tests._data_helpers import write_records
from tfpipe.config import InputConfig
from tfpipe.data import augment_cv

KIDNEY = dict(flip=True, rot90=True, brightness=0.1, contrast=0.1, saturation=0.1, hue=0.2)
OFF = dict(flip=False, rot90=False)


def _first_batch(start) -> tuple[np.ndarray, np.ndarray]:
    image, mask = next(start())
    return image.numpy(), mask.numpy()


def test_floor_variants_give_the_decoded_tiles_unaugmented(tmp_path):
    root = write_records(tmp_path / "rec", folds=1, shards_per_fold=1, per_shard=8)
    common = dict(batch_size=4, deterministic=True, seed=5, shuffle_buffer=0)
    full = InputConfig(augment=KIDNEY, **common)
    real = augment_cv.augment_tiles

    variants = floor_variants(root, full)

    assert set(variants) == {"floor_null_kernel", "floor_copy_kernel"}
    null, copied = (_first_batch(variants[k]) for k in ("floor_null_kernel", "floor_copy_kernel"))
    assert augment_cv.augment_tiles is real  # swapped only while load() traced
    import tfpipe.data as td

    plain = next(iter(td.load(root, config=InputConfig(augment=OFF, **common))))
    augmented = next(iter(td.load(root, config=full)))
    for got in (null, copied):
        np.testing.assert_array_equal(got[0], plain[0].numpy())
        np.testing.assert_array_equal(got[1], plain[1].numpy())
    # The same seeds with the real kernel do change the tiles: the swap is what kept them.
    assert not np.array_equal(augmented[0].numpy(), plain[0].numpy())


def test_kernels_return_or_copy_their_inputs():
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    masks = (images[..., :1] > 40).astype(np.uint8)

    same = null_kernel(images, masks, np.zeros((2, 0)), seed_column=None)
    copied = copy_kernel(images, masks, np.zeros((2, 0)))

    assert same[0] is images and same[1] is masks
    assert copied[0] is not images and copied[0].ctypes.data % 64 == 0
    np.testing.assert_array_equal(copied[0], images)
    np.testing.assert_array_equal(copied[1], masks)


def test_swapped_kernel_is_restored_after_an_error():
    real = augment_cv.augment_tiles
    try:
        with swapped_kernel(null_kernel):
            assert augment_cv.augment_tiles is null_kernel
            raise RuntimeError("building failed")
    except RuntimeError:
        pass
    assert augment_cv.augment_tiles is real


def test_summary_compares_each_floor_with_decode_only():
    def run(rates: list[float], cpu_ms: float) -> dict:
        return {"rounds": rates, "cpu_ms_per_image": cpu_ms}

    throughput = {
        "decode_only": run([100.0, 200.0], 0.9),
        "floor_null_kernel": run([95.0, 190.0], 0.92),
        "floor_copy_kernel": run([90.0, 170.0], 0.95),
        "full": run([80.0, 160.0], 1.1),
    }

    summary = floor_summary(throughput)

    copy = summary["variants"]["floor_copy_kernel"]
    assert copy["vs_decode_only"] == np.median([0.9, 0.85])
    assert np.isclose(copy["cpu_vs_decode_only"], 0.9 / 0.95)
    assert np.isclose(copy["cpu_us_over_decode_only"], 50.0)
    assert np.isclose(summary["cpu_us_budget_for_0.9"], 100.0)
    table = "\n".join(floor_markdown(summary))
    assert "| floor_copy_kernel | 0.88 | 0.95 | 50 |" in table
    assert floor_markdown(None) == []
