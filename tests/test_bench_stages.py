"""The bench's cumulative stages are load()'s own chain: every record, decoded, augmented."""

import numpy as np
import pytest

import tfpipe.data as td
from tests._bench_helpers import write_tiny_records
from tfpipe.bench.stages import StagePlan, compose
from tfpipe.config import load_experiment
from tfpipe.records.manifest import read_manifest


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    root = write_tiny_records(tmp_path_factory.mktemp("rec"), n=16, size=32)
    exp = load_experiment(
        None,
        [
            f"data.output={root}",
            "input.batch_size=4",
            "input.shuffle_buffer=8",
            "input.image_size=24",
            "input.augment.flip=true",
            "input.augment.rot90=true",
        ],
    )
    return StagePlan.from_experiment(exp, read_manifest(root))


def _tiles_by_id(root) -> dict[bytes, np.ndarray]:
    ds = td.load(root, training=False, batch_size=4, with_ids=True)
    return {
        i: image
        for images, _, ids in ds
        for image, i in zip(images.numpy(), ids.numpy(), strict=True)
    }


def test_read_and_parse_give_every_record_once(plan):
    records = list(compose(plan, "read"))
    assert len(records) == 16 and len({r.numpy() for r in records}) == 16
    ids = [f["image/source_id"].numpy() for f, _ in compose(plan, "parse")]
    assert sorted(ids) == sorted(_tiles_by_id(plan.exp.data.output))


@pytest.mark.parametrize("vectorised", [True, False])
def test_decode_gives_the_tiles_load_gives(plan, vectorised):
    want = _tiles_by_id(plan.exp.data.output)
    decoded = list(compose(plan, "decode", vectorised=vectorised))
    assert len(decoded) == 16
    for element, seed in decoded:
        assert seed.shape == (2,)
        np.testing.assert_array_equal(element["image"].numpy(), want[element["id"].numpy()])


def test_augment_gives_the_pipelines_output_shapes(plan):
    pairs = list(compose(plan, "augment"))
    assert len(pairs) == 16
    assert all(i.shape == (24, 24, 3) and m.shape == (24, 24, 1) for i, m in pairs)
    assert plan.stages[3].note == "crop, flip+rot90"  # the tile is cropped from 32 to 24
