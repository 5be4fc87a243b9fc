"""The pseudo-label loop: probability TIFFs from predict, the band rule, the pseudo_labels
source and its records, and extra training records mixed into training only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests._data_helpers import write_records
from tests._predict_helpers import make_slide as make_predict_slide
from tests._predict_helpers import pointwise_model
from tests._records_helpers import data_config, decode, make_dataset, read_records
from tfpipe.config import InputConfig, load_experiment
from tfpipe.errors import ConfigError, InputDataError
from tfpipe.io.masks import IGNORE_VALUE as IGNORE
from tfpipe.io.probmap import (
    MAP_TILE,
    open_probability_tiff,
    quantize,
    read_probability_header,
    write_probability_tiff,
)
from tfpipe.records import format as fmt
from tfpipe.records.build import build_records
from tfpipe.records.manifest import read_manifest, write_manifest
from tfpipe.records.pseudo import PseudoLabels, PseudoSpec, band_labels, check_band
from tfpipe.records.sources import discover_sources

# ----------------------------------------------------------------- probability files


def test_probability_tiff_round_trips_window_by_window(tmp_path: Path) -> None:
    shape, scale = (1203, 2066), 4  # neither side a multiple of the scale or the tile
    h, w = math.ceil(shape[0] / scale), math.ceil(shape[1] / scale)
    prob = np.random.default_rng(0).random((h, w), dtype=np.float32)
    path = write_probability_tiff(tmp_path / "a.tiff", prob, shape, scale, threshold=0.4)

    header = read_probability_header(path)
    assert (header.height, header.width, header.scale, header.threshold) == (*shape, 4, 0.4)
    assert header.map_shape == (h, w) == (301, 517)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (MAP_TILE, MAP_TILE)
        assert page.dtype == np.uint8 and len(tif.pages) == 1
    expected = quantize(prob)
    with open_probability_tiff(path) as m:
        for y, x, wh, ww in [(0, 0, 10, 10), (250, 500, 51, 17), (100, 200, 3, 300)]:
            np.testing.assert_array_equal(
                m.read_window(y, x, wh, ww), expected[y : y + wh, x : x + ww]
            )
        past = m.read_window(h - 2, w - 2, 4, 4)  # past the edges: 0
        np.testing.assert_array_equal(past[:2, :2], expected[-2:, -2:])
        assert not past[2:].any() and not past[:, 2:].any()
        np.testing.assert_allclose(m.read_probabilities(0, 0, 5, 5), prob[:5, :5], atol=0.5 / 255)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_quantize_rounds_and_clips() -> None:
    values = np.array([-0.1, 0.0, 0.3, 0.5, 0.999, 1.0, 1.5], np.float32)
    assert quantize(values).tolist() == [0, 0, 76, 128, 255, 255, 255]


def test_probability_tiff_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be 3x3"):
        write_probability_tiff(tmp_path / "a.tiff", np.zeros((3, 2), np.float32), (10, 9), 4)
    with pytest.raises(ConfigError, match="one class"):
        write_probability_tiff(tmp_path / "a.tiff", np.zeros((3, 3, 2), np.float32), (10, 9), 4)
    tifffile.imwrite(tmp_path / "plain.tiff", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputDataError, match="not a probability map written by tfpipe"):
        read_probability_header(tmp_path / "plain.tiff")


def test_predict_writes_the_stitched_map_as_a_probability_tiff(tmp_path: Path) -> None:
    from tfpipe.predict.ensemble import EnsemblePredictor
    from tfpipe.predict.slides import predict_slides

    (tmp_path / "test").mkdir()
    make_predict_slide(tmp_path / "test" / "s1.tiff", (700, 900))
    exp = load_experiment(
        None,
        [
            "data.tile_size=128",
            "data.downscale=4",
            f"predict.images={tmp_path / 'test'}",
            f"predict.probabilities={tmp_path / 'maps'}",
        ],
    )
    predictor = EnsemblePredictor([pointwise_model(32)], exp.predict.tta)
    summary = predict_slides(
        exp,
        "unused",
        out=tmp_path / "sub.csv",
        save_probabilities=tmp_path / "npy",
        predictor=predictor,
        progress=False,
    )
    path = tmp_path / "maps" / "s1.tiff"
    assert summary.slides[0].probability_map == path
    assert summary.to_dict()["slides"][0]["probability_map"] == str(path)
    header = read_probability_header(path)
    assert (header.height, header.width, header.scale) == (700, 900, 4)
    stitched = np.load(tmp_path / "npy" / "s1.npy")  # the same map at full precision
    with open_probability_tiff(path) as m:
        np.testing.assert_array_equal(m.read_window(0, 0, 175, 225), quantize(stitched))


def test_predict_refuses_probability_tiffs_of_several_classes(tmp_path: Path) -> None:
    from tfpipe.predict.slides import predict_slides

    (tmp_path / "test").mkdir()
    make_predict_slide(tmp_path / "test" / "s1.tiff", (200, 200))
    exp = load_experiment(
        None,
        [
            "data.mask_classes=[healthy, sclerotic]",
            "model.classes=2",
            f"predict.images={tmp_path / 'test'}",
            f"predict.probabilities={tmp_path / 'maps'}",
        ],
    )
    with pytest.raises(ConfigError, match=r"one-class maps .* 2 classes"):
        predict_slides(
            exp, "unused", out=tmp_path / "sub.csv", predictor=lambda b: b, progress=False
        )
    assert not list((tmp_path / "maps").iterdir())


# --------------------------------------------------------------------------- the band


def test_band_rule_on_quantised_levels() -> None:
    # q / 255: 76 -> 0.298 (<= 0.3), 77 -> 0.302, 178 -> 0.698, 179 -> 0.702 (>= 0.7)
    q = np.array([[0, 76, 77, 128], [178, 179, 254, 255]], np.uint8)
    assert band_labels(q, (0.3, 0.7)).tolist() == [[0, 0, IGNORE, IGNORE], [IGNORE, 1, 1, 1]]
    assert band_labels(q, (0.0, 1.0)).tolist() == [[0, IGNORE, IGNORE, IGNORE], [IGNORE] * 3 + [1]]


@pytest.mark.parametrize("band", [(0.7, 0.3), (0.5, 0.5), (-0.1, 0.5), (0.2, 1.2)])
def test_a_band_outside_the_rule_is_refused(band: tuple[float, float]) -> None:
    with pytest.raises(ConfigError, match=r"0 <= lo < hi <= 1"):
        check_band(band)
    with pytest.raises(ConfigError, match=r"pseudo_band must be \[lo, hi\] with 0 <= lo < hi <= 1"):
        load_experiment(None, [f"data.pseudo_band=[{band[0]}, {band[1]}]"])


def test_pseudo_label_reader_labels_a_hand_made_map_in_source_pixels(tmp_path: Path) -> None:
    # A 4 x 5 slide at scale 2: a 2 x 3 map; its last column covers source column 4 (and 5,
    # which is past the slide).
    prob = np.array([[0.1, 0.5, 0.9], [0.9, 0.2, 0.5]], np.float32)
    path = write_probability_tiff(tmp_path / "s.tiff", prob, (4, 5), 2)
    with PseudoLabels(PseudoSpec(path, (0.3, 0.7))) as reader:
        whole = reader.read_window(0, 0, 4, 5)
        assert whole.tolist() == [
            [0, 0, 255, 255, 1],
            [0, 0, 255, 255, 1],
            [1, 1, 0, 0, 255],
            [1, 1, 0, 0, 255],
        ]
        np.testing.assert_array_equal(reader.read_window(1, 1, 2, 3), whole[1:3, 1:4])
        past = reader.read_window(2, 3, 4, 4)  # rows 4-5 and columns 5-6 lie past the slide
        assert past[:2, :2].tolist() == whole[2:4, 3:5].tolist()
        assert not past[2:].any() and not past[:, 2:].any()


# -------------------------------------------------------------------- the pseudo source

SIZES = [(128, 192), (96, 160)]


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Two slides and hand-made probability maps at scale 2 (the records' downscale).

    The map is 0.95 on the slide's discs, 0.5 on a ring around them and 0.05
    elsewhere: labels 1, 255 and 0.
    """
    import cv2

    root = tmp_path_factory.mktemp("pl")
    slides = make_dataset(root, SIZES, seed=3)
    (root / "maps").mkdir()
    labels = {}
    for sid, (_, mask) in slides.items():
        h, w = mask.shape
        small = mask[::2, ::2]
        ring = cv2.dilate(small, np.ones((5, 5), np.uint8)) & ~small.astype(bool)
        prob = np.where(small > 0, 0.95, np.where(ring > 0, 0.5, 0.05)).astype(np.float32)
        write_probability_tiff(root / "maps" / f"{sid}.tiff", prob, (h, w), 2)
        labels[sid] = band_labels(quantize(prob), (0.3, 0.7))
    return root, labels


def _pseudo_config(root: Path, **changes: object):
    values = dict(
        source="pseudo_labels", probabilities=root / "maps", output=root / "pl-records", folds=1
    )
    values.update(changes)
    return data_config(root, **values)


def test_records_of_a_pseudo_source_hold_0_1_and_255(unlabelled: tuple[Path, dict]) -> None:
    root, labels = unlabelled
    manifest = build_records(_pseudo_config(root), progress=False)
    assert manifest.task == "segmentation"
    assert manifest.config["pseudo_band"] == [0.3, 0.7]
    records = read_records(manifest.shards_for_folds())
    assert len(records) == manifest.num_records > 0
    seen: set[int] = set()
    for rec in records:
        image_id, y, x = fmt.parse_source_id(rec[fmt.SOURCE_ID])
        mask = decode(rec[fmt.MASK_ENCODED], rec[fmt.MASK_FORMAT], (32, 32))
        # A 64-px tile at (y, x) reduced 2x is map window (y/2, x/2), zero past the map.
        expected = np.zeros((32, 32), np.uint8)
        part = labels[image_id][y // 2 : y // 2 + 32, x // 2 : x // 2 + 32]
        expected[: part.shape[0], : part.shape[1]] = part
        np.testing.assert_array_equal(mask, expected)
        # Only confident foreground is positive; ignored pixels are not.
        assert rec[fmt.POSITIVE_FRACTION] == pytest.approx((mask == 1).mean(), abs=1e-6)
        seen |= set(np.unique(mask).tolist())
    assert seen == {0, 1, IGNORE}


def test_missing_probability_map_names_the_slide_and_the_command(
    unlabelled: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = unlabelled
    (tmp_path / "maps").mkdir()
    cfg = _pseudo_config(root, probabilities=tmp_path / "maps")
    with pytest.raises(
        InputDataError, match=r"no probability map for slide .*slide0\.tiff.*--probabilities"
    ):
        discover_sources(cfg)


def test_map_of_another_slide_size_is_refused(
    unlabelled: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = unlabelled
    (tmp_path / "maps").mkdir()
    for sid, (h, w) in zip(["slide0", "slide1"], SIZES, strict=True):
        prob = np.zeros((math.ceil((h + 8) / 2), math.ceil(w / 2)), np.float32)
        write_probability_tiff(tmp_path / "maps" / f"{sid}.tiff", prob, (h + 8, w), 2)
    cfg = _pseudo_config(root, probabilities=tmp_path / "maps")
    with pytest.raises(InputDataError, match=r"predicted for a 136x192 .* slide .* is 128x192"):
        discover_sources(cfg)


def test_pseudo_source_config_errors(unlabelled: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = unlabelled
    with pytest.raises(ConfigError, match=r"data\.probabilities is required"):
        discover_sources(_pseudo_config(root, probabilities=None))
    with pytest.raises(InputDataError, match=r"data\.probabilities folder not found"):
        discover_sources(_pseudo_config(root, probabilities=tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="pseudo-labels are binary"):
        discover_sources(_pseudo_config(root, mask_classes=["a", "b"]))


# ------------------------------------------------------------------- extra records


def _marked(fold: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Extra tiles: every pixel 77, masks 0/1/255 (told apart from the main tiles)."""
    mask = np.full((16, 16), IGNORE, np.uint8)
    mask[:4], mask[-4:] = 0, 1
    return np.full((16, 16, 3), 77, np.uint8), mask


def _plain(fold: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Main tiles: random pixels in 100..199; every other tile has mask pixels."""
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = k % 2 == 0
    return rng.integers(100, 200, (16, 16, 3), dtype=np.uint8), mask


def _rename_sources(root: Path, prefix: str) -> None:
    manifest = read_manifest(root)
    manifest.sources = {f"{prefix}{k}": v for k, v in manifest.sources.items()}
    write_manifest(manifest)


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("extra")
    main = write_records(base / "main", folds=2, per_shard=8, size=16, tile_fn=_plain)
    extra = write_records(base / "pl", folds=1, per_shard=6, size=16, tile_fn=_marked, seed=1)
    _rename_sources(extra, "pl")
    return main, extra


def _tiles(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (i, m) for images, masks in ds for i, m in zip(images.numpy(), masks.numpy(), strict=True)
    ]


def test_extra_records_are_mixed_into_training_only(two_folders: tuple[Path, Path]) -> None:
    from tfpipe.data import load

    main, extra = two_folders
    cfg = InputConfig(
        batch_size=4,
        shuffle_buffer=64,
        extra_records=[extra],
        augment={"flip": False, "rot90": False},
    )
    train = _tiles(load(main, folds=[1], training=True, config=cfg))
    marked = [m for i, m in train if (i == 77).all()]
    assert len(train) == 16 + 12  # fold 1 and both extra shards, full batches of 4
    assert len(marked) == 12
    assert all(set(np.unique(m).tolist()) == {0, 1, IGNORE} for m in marked)
    val = _tiles(load(main, folds=[0], training=False, config=cfg))
    assert len(val) == 16 and not any((i == 77).all() for i, _ in val)


def test_extra_records_count_in_the_balance(two_folders: tuple[Path, Path]) -> None:
    from tfpipe.data.extra import add_extra_records, read_extra_manifests
    from tfpipe.data.plan import plan_input

    main, extra = two_folders
    cfg = InputConfig(batch_size=4, balance=0.5, extra_records=[extra])
    manifest = read_manifest(main)
    plan = plan_input(manifest, [1], cfg, training=True)
    mixed = add_extra_records(plan, manifest, read_extra_manifests(manifest, [extra]), cfg)
    assert mixed.num_records == plan.num_records + 12
    assert mixed.cache_key != plan.cache_key
    assert mixed.balance != plan.balance  # the extra tiles (all positive) shift the natural share


def test_extra_records_that_do_not_fit_are_refused(
    two_folders: tuple[Path, Path], tmp_path: Path
) -> None:
    from tfpipe.data.extra import read_extra_manifests

    main, _ = two_folders
    manifest = read_manifest(main)
    with pytest.raises(ConfigError, match="is the main records folder itself"):
        read_extra_manifests(manifest, [main])
    same_slides = write_records(tmp_path / "same", folds=1, per_shard=4, size=16)
    with pytest.raises(ConfigError, match=r"shares 1 source image.*'slide0'"):
        read_extra_manifests(manifest, [same_slides])
    bigger = write_records(tmp_path / "big", folds=1, per_shard=4, size=32)
    _rename_sources(bigger, "big")
    with pytest.raises(ConfigError, match=r"tile size=\(32, 32\) but the main records have"):
        read_extra_manifests(manifest, [bigger])


@pytest.mark.slow
def test_trainer_mixes_extra_records_into_training_folds_only(
    two_folders: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tfpipe.data.pipeline
    from tests._train_helpers import experiment, use_tiny_model
    from tfpipe.train.trainer import train_experiment

    use_tiny_model(monkeypatch)
    main, extra = two_folders
    calls: list[tuple[list[int], int]] = []
    real = tfpipe.data.pipeline.add_extra_records

    def spy(plan, manifest, extras, cfg):
        mixed = real(plan, manifest, extras, cfg)
        calls.append((plan.folds, mixed.num_records))
        return mixed

    monkeypatch.setattr(tfpipe.data.pipeline, "add_extra_records", spy)
    exp = experiment(
        main, tmp_path / "runs", f"input.extra_records=[{extra}]", "train.steps_per_epoch=null"
    )
    summary = train_experiment(exp, folds=[0])
    assert calls and all(folds == [1] and n == 16 + 12 for folds, n in calls)
    assert summary.folds[0].steps == 2 * ((16 + 12) // 4)  # 2 epochs over labelled + extra


# ------------------------------------------------------------------------- the recipe


def test_pseudo_label_recipe_is_kidney_yaml_plus_the_loop_keys() -> None:
    from tfpipe.train.runlog import diff_configs

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    plain = load_experiment(experiments / "kidney.yaml")
    loop = load_experiment(experiments / "kidney-pl.yaml")
    changed = {line.split(":")[0] for line in diff_configs(plain.to_dict(), loop.to_dict())}
    assert changed <= {
        "name",
        "description",
        "data.probabilities",
        "data.pseudo_band",
        "input.extra_records",
        "predict.probabilities",
    }
    assert loop.predict.probabilities == loop.data.probabilities  # step 2 writes, step 3 reads
    step3 = load_experiment(
        experiments / "kidney-pl.yaml",
        [
            "data.source=pseudo_labels",
            "data.images=data/hubmap/test",
            "data.output=records/kidney-pl",
            "data.folds=1",
        ],
    )
    assert [step3.data.output] == loop.input.extra_records  # step 4 trains on step 3's output
