"""data.sampling: grid, shifted grid and object-centred tiles; anatomy weights in the records."""

from __future__ import annotations

import hashlib
import re

import cv2
import numpy as np
import pytest

from tests._records_helpers import data_config, decode, make_dataset
from tfpipe.config import DataConfig
from tfpipe.errors import ConfigError, InputDataError
from tfpipe.io.polygons import feature, write_features
from tfpipe.io.rle import encode_rle, parse_rle
from tfpipe.records import format as fmt
from tfpipe.records.bandmask import RowSegments
from tfpipe.records.build import build_records
from tfpipe.records.manifest import read_manifest
from tfpipe.records.reader import iter_records, parse_example
from tfpipe.records.sampling import (
    WEIGHT_STEPS,
    grid_offsets,
    grid_rows,
    object_tiles,
    region_weights,
    segment_boxes,
    tile_weight,
)
from tfpipe.records.sources import SourceItem, discover_sources
from tfpipe.records.tiling import TileSpec

SIZES = [(300, 260), (200, 330)]
TILE = 64
ANATOMY = {"Cortex": 0.5, "Medulla": 0.25, "outside": 0.125}
SPEC = TileSpec(TILE, TILE, 2)
EVERY_TILE = {"min_tissue_fraction": 0.0}  # keeps every tile: positions can be checked exactly


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampling")
    return root, make_dataset(root, SIZES)


# ---------------------------------------------------------------------------- plans


def test_the_shifted_grid_starts_half_a_tile_in_and_is_dropped_when_inside_the_grid():
    spec = TileSpec(512, 512, 4)
    assert grid_rows(1300, 0, spec) == [0, 512, 1024]
    assert grid_rows(1300, 256, spec) == [256, 768, 1280]  # on until a tile reaches the edge
    assert grid_rows(250, 256, spec) == []
    assert grid_offsets(["grid", "shifted_grid"], spec) == (0, 256)
    assert grid_offsets(["shifted_grid"], TileSpec(512, 256, 4)) == (256,)
    assert grid_offsets(["grid", "shifted_grid"], TileSpec(512, 256, 4)) == (0,)
    assert grid_offsets(["objects"], spec) == ()


def segments_of(mask: np.ndarray) -> RowSegments:
    return RowSegments.from_runs(parse_rle(encode_rle(mask), mask.shape), mask.shape)


@pytest.mark.parametrize("seed", range(4))
def test_objects_of_an_rle_mask_are_its_8_connected_components(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((90, 120), np.uint8)
    for _ in range(12):
        cx, cy = (int(v) for v in rng.integers([0, 0], [120, 90]))
        cv2.ellipse(
            mask, (cx, cy), tuple(int(v) for v in rng.integers(1, 14, 2)), 30, 0, 360, 1, -1
        )
    mask[40, 40] = mask[41, 41] = 1  # touching only at a corner: one object
    mask[0:5, 119] = 1  # on the right edge
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    want = sorted((float(x), float(y), float(x + w), float(y + h)) for x, y, w, h, _ in stats[1:n])
    assert sorted(segment_boxes(segments_of(mask))) == want


def test_object_tiles_are_centred_jittered_by_seed_and_clamped_into_the_slide():
    spec = TileSpec(64, 64, 2)
    item = SourceItem("s", None, height=200, width=300)
    boxes = [(100.0, 80.0, 120.0, 110.0), (0.0, 0.0, 6.0, 6.0), (290.0, 190.0, 300.0, 200.0)]
    still = object_tiles(boxes, item, spec, (1, 0.0))
    assert still == [(0, 0), (63, 78), (136, 236)]  # centre - 32, clamped to [0, size - 64]
    moved = object_tiles(boxes[:1], item, spec, (1, 0.25))
    assert moved == object_tiles(boxes[:1], item, spec, (1, 0.25))  # same seed: same tiles
    assert moved != object_tiles(boxes[:1], item, spec, (2, 0.25))
    (y, x) = moved[0]
    assert abs(y - 63) <= 16 and abs(x - 78) <= 16 and (y, x) != (63, 78)


def all_records(manifest) -> list[dict]:
    """Every record, single values unwrapped (read without TensorFlow: no seconds of import)."""
    return [
        {key: values[0] for key, values in parse_example(data).items()}
        for shard in manifest.shards_for_folds()
        for data in iter_records(shard)
    ]


def expected_window(image: np.ndarray, y: int, x: int) -> np.ndarray:
    out = np.zeros((TILE, TILE, *image.shape[2:]), image.dtype)
    part = image[y : y + TILE, x : x + TILE]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def object_positions(mask: np.ndarray, sid: str, height: int, width: int, seed: int) -> set:
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes = [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h, _ in stats[1:n]]
    item = SourceItem(sid, None, height=height, width=width)
    return set(object_tiles(boxes, item, SPEC, (seed, 0.25)))


def test_build_cuts_the_grid_the_shifted_grid_and_one_tile_per_object(source, tmp_path):
    root, slides = source
    cfg = data_config(
        root,
        output=tmp_path / "all",
        filter=EVERY_TILE,
        sampling={"tiles": ["grid", "shifted_grid", "objects"]},
    )
    manifest = build_records(cfg, progress=False)
    records = all_records(manifest)
    got: dict[str, set] = {}
    for rec in records:
        sid, y, x = fmt.parse_source_id(rec[fmt.SOURCE_ID])
        got.setdefault(sid, set()).add((y, x))
        image, mask = slides[sid]
        tile = cv2.resize(expected_window(image, y, x), (32, 32), interpolation=cv2.INTER_AREA)
        small = cv2.resize(expected_window(mask, y, x), (32, 32), interpolation=cv2.INTER_NEAREST)
        got_tile = decode(rec[fmt.IMAGE_ENCODED], rec[fmt.IMAGE_FORMAT], tile.shape)
        got_mask = decode(rec[fmt.MASK_ENCODED], rec[fmt.MASK_FORMAT], small.shape)
        np.testing.assert_array_equal(got_tile, tile)
        np.testing.assert_array_equal(got_mask, small)
    assert len(records) == sum(len(v) for v in got.values())  # each position once
    for sid, (_, mask) in slides.items():
        h, w = mask.shape
        grid, shifted = (
            {(y, x) for y in grid_rows(h, o, SPEC) for x in grid_rows(w, o, SPEC)} for o in (0, 32)
        )
        objects = object_positions(mask, sid, h, w, cfg.seed)
        assert objects - grid - shifted, "the objects add tiles of their own"
        assert got[sid] == grid | shifted | objects


def test_objects_alone_cut_only_object_tiles(source, tmp_path):
    root, slides = source
    cfg = data_config(root, output=tmp_path / "objects", sampling={"tiles": ["objects"]})
    manifest = build_records(cfg, progress=False)
    ids = {fmt.parse_source_id(r[fmt.SOURCE_ID]) for r in all_records(manifest)}
    want = set()
    for sid, (_, mask) in slides.items():
        want |= {(sid, y, x) for y, x in object_positions(mask, sid, *mask.shape, cfg.seed)}
    assert ids == want
    assert all(s.positive == s.kept for s in manifest.sources.values())


# ---------------------------------------------------------------------------- weights


def rectangle(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def write_anatomy(root, slides) -> dict[str, np.ndarray]:
    """Cortex: the left 60 % with the medulla as a hole; returns each slide's region map."""
    regions = {}
    for sid, (_, mask) in slides.items():
        h, w = mask.shape
        cortex, medulla = rectangle(0, 0, int(0.6 * w), h), rectangle(20, 30, 90, h - 40)
        write_features(
            root / "train" / f"{sid}-anatomical-structure.json",
            [
                feature({"type": "Polygon", "coordinates": [medulla]}, "Medulla", 0),
                feature({"type": "Polygon", "coordinates": [cortex, medulla[::-1]]}, "Cortex", 0),
            ],
        )
        values = np.zeros((h, w), np.uint8)
        values[:, : int(0.6 * w)] = 1
        values[30 : h - 40, 20:90] = 2
        regions[sid] = values
    return regions


def test_record_weights_are_region_fractions_times_weights(source, tmp_path):
    root, slides = source
    regions = write_anatomy(root, slides)
    cfg = data_config(
        root,
        output=tmp_path / "weights",
        sampling={"tiles": ["grid", "objects"], "anatomy": ANATOMY},
    )
    manifest = build_records(cfg, progress=False)
    weights = (0.125, 0.5, 0.25)  # outside, Cortex, Medulla
    sums: dict[str, float] = {}
    seen = set()
    for shard in manifest.shards_for_folds():
        for data in iter_records(shard):
            rec = parse_example(data)
            sid, y, x = fmt.parse_source_id(rec[fmt.SOURCE_ID][0])
            window = expected_window(regions[sid], y, x)  # padding is outside
            fractions = np.bincount(window.ravel(), minlength=3) / window.size
            want = np.floor(float(fractions @ np.array(weights)) * WEIGHT_STEPS + 0.5)
            assert rec[fmt.TILE_WEIGHT] == [want / WEIGHT_STEPS]
            sums[sid] = sums.get(sid, 0.0) + rec[fmt.TILE_WEIGHT][0]
            seen.add(round(fractions[2], 3) > 0)
    assert seen == {True, False}  # some tiles reach into the medulla, some do not
    assert {k: s.weight_sum for k, s in manifest.sources.items()} == sums
    assert read_manifest(manifest.root).sources[sid].weight_sum == sums[sid]


def test_records_without_anatomy_carry_no_weight_key(source, tmp_path):
    root, _ = source
    manifest = build_records(data_config(root, output=tmp_path / "plain"), progress=False)
    shard = manifest.shards_for_folds()[0]
    assert fmt.TILE_WEIGHT not in parse_example(next(iter_records(shard)))
    assert "weight_sum" not in (manifest.root / "manifest.json").read_text()


def test_tile_weights_are_on_the_2_16_grid():
    regions = np.zeros((3, 3), np.uint8)
    regions[0, 0] = 1
    assert tile_weight(regions, (0.0, 0.3)) * WEIGHT_STEPS == round(0.3 / 9 * WEIGHT_STEPS)
    assert region_weights({"Medulla": 0.17, "Cortex": 0.46}) == (0.0, 0.17, 0.46)


@pytest.mark.slow  # two process pools (~5 s on 2 cores)
def test_sampled_builds_are_the_same_bytes_whatever_the_worker_count(source, tmp_path):
    root, slides = source
    write_anatomy(root, slides)
    digests = []
    for workers in (1, 2):
        cfg = data_config(
            root,
            output=tmp_path / f"w{workers}",
            workers=workers,
            sampling={"tiles": ["grid", "shifted_grid", "objects"], "anatomy": ANATOMY},
        )
        m = build_records(cfg, progress=False)
        digests.append([hashlib.sha256((m.root / s.path).read_bytes()).digest() for s in m.shards])
    assert digests[0] == digests[1]


# ----------------------------------------------------------------------------- errors


def test_anatomy_files_are_checked_up_front(source, tmp_path):
    root, slides = source
    write_anatomy(root, slides)
    cfg = data_config(root, sampling={"anatomy": {"Cortex": 1.0}})
    with pytest.raises(InputDataError, match=r"feature 0 is region classification.name='Medulla'"):
        discover_sources(cfg)
    other = data_config(root, sampling={"anatomy": ANATOMY, "anatomy_file": "{id}-regions.json"})
    with pytest.raises(InputDataError, match=re.escape("has no anatomy file")):
        discover_sources(other)


def test_objects_need_polygon_or_rle_labels(source, tmp_path):
    root, _ = source
    with pytest.raises(ConfigError, match="objects centres tiles on labelled objects"):
        discover_sources(data_config(root, source="unlabelled", sampling={"tiles": ["objects"]}))


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        ({"tiles": []}, "tiles must list grid, shifted_grid and/or objects"),
        ({"tiles": ["grid", "grid"]}, "tiles must list grid, shifted_grid and/or objects"),
        ({"anatomy": {"Cortex": -1}}, "anatomy weights must be >= 0"),
        ({"anatomy": {"Cortex": 0}}, "with at least one > 0"),
        ({"anatomy_file": "regions.json"}, "anatomy_file must contain {id}"),
        ({"jitter": 0.7}, "less than or equal to 0.5"),
    ],
)
def test_sampling_settings_are_validated(sampling, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DataConfig(sampling=sampling)
