"""Polygon sources: GeoJSON read and checked, rasterized window by window, built into records."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from tests._records_helpers import data_config, make_dataset
from tfpipe import errors
from tfpipe.cli import main
from tfpipe.config import DataConfig
from tfpipe.errors import ConfigError, InputDataError, MissingExtraError
from tfpipe.io import decode_rle, open_slide, read_rle_csv
from tfpipe.io.polygons import Feature, feature, read_features, write_features
from tfpipe.records import format as fmt
from tfpipe.records.build import build_records
from tfpipe.records.polygons import PolygonMask, Shape, polygon_value
from tfpipe.records.reader import iter_records, parse_example
from tfpipe.records.sources import discover_sources
from tfpipe.synthetic import make_demo_data

SQUARE = [[1, 1], [9, 1], [9, 7], [1, 7], [1, 1]]
HOLE = [[3, 3], [3, 5], [6, 5], [6, 3], [3, 3]]


def polygon(*rings: list) -> dict:
    return {"type": "Polygon", "coordinates": [list(r) for r in rings]}


def mask_of(shapes: list[tuple[int, list[list]]], height: int, width: int) -> PolygonMask:
    """A PolygonMask of ``(value, [rings of a polygon, ...])`` shapes."""
    as_arrays = [
        Shape(v, tuple(tuple(np.array(r, float) for r in rings) for rings in polys))
        for v, polys in shapes
    ]
    return PolygonMask(height, width, tuple(as_arrays))


def centres_inside(height: int, width: int, inside) -> np.ndarray:
    """The pixel-centre rule computed directly: 1 where ``inside(x, y)`` holds at the centre."""
    y, x = np.mgrid[0:height, 0:width] + 0.5
    return inside(x, y).astype(np.uint8)


# ----------------------------------------------------------------------------- reading


def test_reads_a_list_a_collection_and_one_feature(tmp_path):
    f = feature(polygon(SQUARE, HOLE), "glomerulus", -1)
    for i, data in enumerate([[f], {"type": "FeatureCollection", "features": [f]}, f]):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps(data))
        (got,) = read_features(path)
        assert got.name == "glomerulus" and got.bounds == (1.0, 1.0, 9.0, 7.0)
        assert [len(r) for r in got.polygons[0]] == [5, 5]


def test_open_rings_are_closed_and_the_property_path_is_followed(tmp_path):
    f = feature(polygon(SQUARE[:-1]), "x", -1)
    f["properties"]["kind"] = {"label": 3}
    path = tmp_path / "a.json"
    write_features(path, [f])
    (got,) = read_features(path, "kind.label")
    assert got.name == "3"
    np.testing.assert_array_equal(got.polygons[0][0][-1], got.polygons[0][0][0])
    assert read_features(path, "kind.missing")[0].name is None


BAD_FILES = {
    "not json": ("[{", "is not valid JSON: Expecting"),
    "not a list": ('{"type": "Point"}', "must hold a JSON list of GeoJSON Features"),
    "line": (
        [{"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}],
        "feature 0 has geometry type 'LineString'",
    ),
    "no geometry": ([{"type": "Feature", "properties": {}}], "feature 0 has no geometry"),
    "short ring": (
        [feature(polygon(SQUARE), "a", 0), feature(polygon([[0, 0], [1, 1], [0, 0]]), "a", 0)],
        "feature 1 polygon 0 ring 0 has 2 distinct position(s)",
    ),
    "text coordinate": (
        [feature(polygon([[0, 0], ["a", 1], [1, 1], [0, 0]]), "a", 0)],
        "ring 0: a ring is a list of [x, y] number pairs",
    ),
    "nan": (
        [feature(polygon([[0, 0], [float("nan"), 1], [1, 1], [0, 0]]), "a", 0)],
        "has a coordinate that is not a finite number",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_name_the_file_the_feature_and_the_rule(tmp_path, case):
    content, message = BAD_FILES[case]
    path = tmp_path / "slide.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(InputDataError, match=re.escape(message)) as err:
        read_features(path)
    assert str(path) in str(err.value)


# ------------------------------------------------------------------------- rasterizing


def test_a_pixel_is_in_a_polygon_when_its_centre_is_and_holes_stay_empty():
    got = mask_of([(3, [[SQUARE, HOLE]])], 9, 11).read_window(0, 0, 9, 11)
    want = centres_inside(9, 11, lambda x, y: (x > 1) & (x < 9) & (y > 1) & (y < 7))
    want &= 1 - centres_inside(9, 11, lambda x, y: (x > 3) & (x < 6) & (y > 3) & (y < 5))
    np.testing.assert_array_equal(got, 3 * want)


def test_a_triangle_follows_the_pixel_centre_rule():
    triangle = [[0.3, 0.2], [12.7, 2.9], [4.1, 9.6], [0.3, 0.2]]
    got = mask_of([(1, [[triangle]])], 10, 14).read_window(0, 0, 10, 14)
    (ax, ay), (bx, by), (cx, cy) = triangle[:3]

    def inside(x, y):
        def side(px, py, qx, qy):
            return (qx - px) * (y - py) - (qy - py) * (x - px)

        s1, s2, s3 = side(ax, ay, bx, by), side(bx, by, cx, cy), side(cx, cy, ax, ay)
        return ((s1 > 0) & (s2 > 0) & (s3 > 0)) | ((s1 < 0) & (s2 < 0) & (s3 < 0))

    np.testing.assert_array_equal(got, centres_inside(10, 14, inside))


def test_windows_are_the_whole_mask_cut_and_past_the_edge_is_zero():
    rng = np.random.default_rng(0)
    shapes = []
    for value in (1, 2, 1):
        cx, cy, r = rng.uniform(10, 50), rng.uniform(10, 30), rng.uniform(4, 12)
        angles = np.linspace(0, 2 * np.pi, 17)
        ring = np.c_[cx + r * np.cos(angles), cy + r * np.sin(angles)].tolist()
        shapes.append((value, [[ring]]))
    mask = mask_of(shapes, 40, 60)
    whole = mask.read_window(0, 0, 40, 60)
    assert set(np.unique(whole)) >= {0, 1, 2}
    for y, x, h, w in [(7, 13, 20, 30), (0, 31, 40, 29), (33, 50, 16, 16)]:
        expected = np.zeros((h, w), np.uint8)
        part = whole[y : y + h, x : x + w]
        expected[: part.shape[0], : part.shape[1]] = part
        np.testing.assert_array_equal(mask.read_window(y, x, h, w), expected)
    assert not mask.read_window(100, 100, 8, 8).any()


def test_later_features_win_and_rows_select_only_the_shapes_they_meet():
    top = [[0, 0], [8, 0], [8, 4], [0, 4], [0, 0]]
    bottom = [[0, 10], [8, 10], [8, 14], [0, 14], [0, 10]]
    over = [[2, 2], [6, 2], [6, 12], [2, 12], [2, 2]]
    mask = mask_of([(1, [[top]]), (1, [[bottom]]), (2, [[over]])], 16, 8)
    whole = mask.read_window(0, 0, 16, 8)
    assert whole[3, 3] == 2 and whole[3, 0] == 1 and whole[7, 3] == 2 and whole[7, 0] == 0
    band = mask.select_rows(9, 16)
    assert len(band.shapes) == 2  # bottom and over
    np.testing.assert_array_equal(band.read_window(9, 0, 7, 8), whole[9:16])


def test_objects_are_polygons_and_an_island_in_a_hole_belongs_to_its_polygon():
    island = [[4, 3.5], [5, 3.5], [5, 4.5], [4, 4.5], [4, 3.5]]
    far = [[20, 20], [24, 20], [24, 26], [20, 26], [20, 20]]
    mask = mask_of([(1, [[SQUARE, HOLE], [island], [far]]), (0, [[far]])], 30, 30)
    assert mask.objects() == [(1.0, 1.0, 9.0, 7.0), (20.0, 20.0, 24.0, 26.0)]


# ---------------------------------------------------------------------------- classes


def test_polygon_classes_map_names_to_mask_classes_or_drop_them():
    cfg = DataConfig(
        mask_classes=["healthy", "sclerotic"],
        polygon_classes={"glomerulus": "healthy", "sclerotic glomerulus": "sclerotic", "x": None},
    )
    where = Path("a.json")
    assert polygon_value(Feature(0, (), "glomerulus"), where, cfg) == 1
    assert polygon_value(Feature(0, (), "sclerotic glomerulus"), where, cfg) == 2
    assert polygon_value(Feature(0, (), "x"), where, cfg) is None
    with pytest.raises(InputDataError, match=r"a.json feature 4 has classification.name: 'Cortex'"):
        polygon_value(Feature(4, (), "Cortex"), where, cfg)
    assert polygon_value(Feature(0, (), "anything"), where, DataConfig()) == 1


def test_mapping_targets_must_be_mask_classes():
    with pytest.raises(ValueError, match=r"maps to class 'ill', which is not in mask_classes"):
        DataConfig(mask_classes=["healthy"], polygon_classes={"a": "ill"})
    with pytest.raises(ValueError, match=r"maps to 2 classes .* mask_classes is unset"):
        DataConfig(polygon_classes={"a": "one", "b": "two"})


# ------------------------------------------------------------------- sources and builds


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp("poly") / "hubmap", n=2, size=1536, seed=3)


def demo_config(root: Path, **changes) -> DataConfig:
    values = dict(
        images=root / "train",
        labels=root / "train.csv",
        output=root.parent / "records",
        tile_size=512,
        downscale=4,
        folds=2,
        workers=1,
        seed=5,
        shard_records=16,
    )
    return DataConfig(**{**values, **changes})


def test_demo_polygons_rasterize_to_the_rle_exactly_and_use_every_layout(demo):
    kinds, names = set(), set()
    for split in ("train", "test"):
        for image_id, rle in read_rle_csv(demo / f"{split}.csv").items():
            with open_slide(demo / split / f"{image_id}.tiff") as slide:
                h, w = slide.height, slide.width
            features = read_features(demo / split / f"{image_id}.json")
            kinds |= {(len(f.polygons), len(f.polygons[0])) for f in features}
            names |= {f.name for f in features}
            shapes = tuple(Shape(1, f.polygons) for f in features)
            mask = PolygonMask(h, w, shapes)
            np.testing.assert_array_equal(mask.read_window(0, 0, h, w), decode_rle(rle, (h, w)))
            regions = read_features(demo / split / f"{image_id}-anatomical-structure.json")
            assert [(r.name, len(r.polygons[0])) for r in regions] == [
                ("Medulla", 1),
                ("Cortex", 2),  # the medulla is its hole
            ]
    assert (2, 2) in kinds  # a MultiPolygon whose first polygon has a hole
    assert (2, 1) in kinds  # a MultiPolygon of two glomeruli
    assert names == {"glomerulus", "sclerotic glomerulus"}


def shard_digests(manifest) -> list[str]:
    return [
        hashlib.sha256((manifest.root / s.path).read_bytes()).hexdigest() for s in manifest.shards
    ]


def test_polygon_records_equal_rle_records_byte_for_byte(demo, tmp_path):
    rle = build_records(demo_config(demo, output=tmp_path / "rle"), progress=False)
    poly = build_records(
        demo_config(demo, source="polygons", output=tmp_path / "poly"), progress=False
    )
    assert rle.num_records == poly.num_records > 0
    assert sum(s.positive for s in poly.sources.values()) > 0
    assert shard_digests(rle) == shard_digests(poly)


def test_polygon_classes_give_multi_class_masks(demo, tmp_path):
    cfg = demo_config(
        demo,
        source="polygons",
        output=tmp_path / "classes",
        mask_classes=["healthy", "sclerotic"],
        polygon_classes={"glomerulus": "healthy", "sclerotic glomerulus": "sclerotic"},
    )
    manifest = build_records(cfg, progress=False)
    values = set()
    for shard in manifest.shards_for_folds():
        for data in iter_records(shard):
            record = parse_example(data)
            assert record[fmt.MASK_FORMAT] == [b"raw"]
            mask = np.frombuffer(record[fmt.MASK_ENCODED][0], np.uint8)
            values |= set(np.unique(mask).tolist())
    assert values == {0, 1, 2}
    assert manifest.mask_classes == ["healthy", "sclerotic"]


def copy_demo(demo: Path, target: Path) -> Path:
    shutil.copytree(demo / "train", target / "train")
    shutil.copy(demo / "train.csv", target / "train.csv")
    return target


def first_json(root: Path) -> Path:
    return sorted(p for p in (root / "train").glob("*.json") if "anatomical" not in p.name)[0]


def spoil_missing(root: Path) -> dict:
    first_json(root).unlink()
    return {}


def spoil_off_slide(root: Path) -> dict:
    path = first_json(root)
    data = json.loads(path.read_text())
    data[1]["geometry"]["coordinates"][0][3] = [50000, 12]
    path.write_text(json.dumps(data))
    return {}


def spoil_unmapped(root: Path) -> dict:
    return {"polygon_classes": {"glomerulus": "glomerulus"}}


SPOILED = {
    "missing": (spoil_missing, "has no polygon file"),
    "off slide": (spoil_off_slide, "feature 1 has vertex (x=50000, y=12) off slide"),
    "unmapped": (spoil_unmapped, "has classification.name: 'sclerotic glomerulus', which"),
}


@pytest.mark.parametrize("case", sorted(SPOILED))
def test_bad_polygon_sources_fail_discovery_with_exit_code_2(demo, tmp_path, capsys, case):
    spoil, message = SPOILED[case]
    root = copy_demo(demo, tmp_path / "data")
    cfg = demo_config(root, source="polygons", output=tmp_path / "out", **spoil(root))
    with pytest.raises(InputDataError, match=re.escape(message)):
        discover_sources(cfg)
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({"data": cfg.model_dump(mode="json")}))
    assert main(["build-records", str(experiment)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_missing_rasterio_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_dataset(root, [(64, 64)])
    monkeypatch.setitem(errors.EXTRA_MODULES, "rasterio", ("rasterio", "tfpipe_absent_module"))
    with pytest.raises(MissingExtraError, match=r"data.source=polygons needs the \[rasterio\]"):
        discover_sources(data_config(root, source="polygons"))


def test_polygon_sources_need_no_csv(demo, tmp_path):
    root = copy_demo(demo, tmp_path / "data")
    (root / "train.csv").unlink()
    plan = discover_sources(demo_config(root, source="polygons", labels=None))
    assert all(item.labels.polygons is not None for item in plan.items)
    with pytest.raises(ConfigError, match=r"data\.labels is required"):
        discover_sources(demo_config(root, labels=None))


def test_full_resolution_coordinates_are_scaled_to_the_level_read(tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    rgb = np.full((256, 320, 3), 200, np.uint8)
    with tifffile.TiffWriter(folder / "s.tiff") as tw:
        tw.write(rgb, photometric="rgb", tile=(64, 64), subifds=1)
        tw.write(rgb[::2, ::2], photometric="rgb", tile=(64, 64), subfiletype=1)
    box = [[40, 20], [300, 20], [300, 100], [40, 100], [40, 20]]  # x = 300 is past level 1
    write_features(folder / "s.json", [feature(polygon(box), "glomerulus", 0)])
    cfg = DataConfig(source="polygons", images=folder, level=1, tile_size=64)
    (item,) = discover_sources(cfg).items
    assert (item.height, item.width) == (128, 160)
    want = np.zeros((128, 160), np.uint8)
    want[10:50, 20:150] = 1
    np.testing.assert_array_equal(item.labels.polygons.read_window(0, 0, 128, 160), want)
