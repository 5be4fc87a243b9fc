"""build-records end to end on tiny synthetic slides: values, format, shuffle, safety, errors."""

import re
import shutil
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import yaml

import tfpipe
from tests._records_helpers import (
    data_config,
    decode,
    make_dataset,
    read_records,
    write_rle_csv,
    write_tiff,
)
from tfpipe.cli import main
from tfpipe.errors import InputDataError, RecordsError, TfpipeError
from tfpipe.io.rle import encode_rle
from tfpipe.records import build as build_module
from tfpipe.records import format as fmt
from tfpipe.records.build import build_records
from tfpipe.records.example import serialize_example
from tfpipe.records.manifest import read_manifest, verify_shards
from tfpipe.records.writer import ShardWriter, frame_record

SIZES = [(300, 260), (200, 330), (256, 256)]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Three slides with RLE masks; ``{id: (image, mask)}`` and the data root."""
    root = tmp_path_factory.mktemp("hubmap")
    return root, make_dataset(root, SIZES)


@pytest.fixture(scope="module")
def built(source):
    """One png build of ``source`` (workers=1) shared by the read-only tests."""
    root, slides = source
    manifest = build_records(data_config(root, output=root / "records-png"), progress=False)
    return manifest, slides


def _window(array: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    """``size`` x ``size`` at (y, x), zero-padded past the edges (like Slide.read_window)."""
    out = np.zeros((size, size, *array.shape[2:]), array.dtype)
    part = array[y : y + size, x : x + size]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def _expected_tile(slides, sid: bytes, size: int, out: int):
    image_id, y, x = fmt.parse_source_id(sid)
    image, mask = slides[image_id]
    tile = cv2.resize(_window(image, y, x, size), (out, out), interpolation=cv2.INTER_AREA)
    small = cv2.resize(_window(mask, y, x, size), (out, out), interpolation=cv2.INTER_NEAREST)
    return tile, small, bool(small.any())


@pytest.mark.parametrize(("encoding", "stride"), [("png", None), ("raw", 48), ("jpeg", None)])
def test_records_parse_with_tensorflow_and_equal_the_resized_source(source, encoding, stride):
    root, slides = source
    cfg = data_config(root, output=root / f"rec-{encoding}", encoding=encoding, stride=stride)
    manifest = build_records(cfg, progress=False)
    records = read_records(manifest.shards_for_folds())
    assert len(records) == manifest.num_records > 0
    positives = 0
    for rec in records:
        assert rec[fmt.IMAGE_FORMAT] == encoding.encode()
        assert (rec[fmt.IMAGE_HEIGHT], rec[fmt.IMAGE_WIDTH], rec[fmt.IMAGE_CHANNELS]) == (32, 32, 3)
        tile, small_mask, any_mask = _expected_tile(slides, rec[fmt.SOURCE_ID], 64, 32)
        image = decode(rec[fmt.IMAGE_ENCODED], rec[fmt.IMAGE_FORMAT], (32, 32, 3))
        mask = decode(rec[fmt.MASK_ENCODED], rec[fmt.MASK_FORMAT], (32, 32))
        if encoding == "jpeg":
            assert np.abs(image.astype(int) - tile.astype(int)).mean() < 6  # lossy
        else:
            np.testing.assert_array_equal(image, tile)
        np.testing.assert_array_equal(mask, small_mask)  # masks are lossless in every encoding
        assert rec[fmt.MASK_FORMAT] == (b"raw" if encoding == "raw" else b"png")
        assert rec[fmt.POSITIVE_FRACTION] == pytest.approx(small_mask.mean(), abs=1e-6)
        positives += any_mask
    # Every tile with a mask pixel is kept, whatever the tissue filter says.
    step = stride or 64
    expected_positive = sum(
        cv2.resize(_window(mask, y, x, 64), (32, 32), interpolation=cv2.INTER_NEAREST).any()
        for _, mask in slides.values()
        for y in range(0, mask.shape[0], step)
        for x in range(0, mask.shape[1], step)
        if (y == 0 or y + 64 - step < mask.shape[0]) and (x == 0 or x + 64 - step < mask.shape[1])
    )
    assert positives == expected_positive


def test_serialised_examples_parse_like_make_example():
    import tensorflow as tf

    cases = [
        dict(mask=b"\x89PNGmask", mask_format="png", positive_fraction=0.25),
        dict(labels=[0, 1, 1, 0]),
        dict(),
    ]
    for extra in cases:
        args = (b"\x00\x01image", "png", (4, 5, 3))
        ours = serialize_example(*args, source_id="sl:ide:64:128", **extra)
        theirs = fmt.make_example(*args, source_id="sl:ide:64:128", **extra)
        assert tf.train.Example.FromString(ours) == theirs
        task = "classification" if "labels" in extra else "segmentation" if extra else "unlabelled"
        spec = fmt.feature_spec(task)
        a = tf.io.parse_single_example(ours, spec)
        b = tf.io.parse_single_example(theirs.SerializeToString(), spec)
        for key in spec:
            va, vb = a[key], b[key]
            if isinstance(va, tf.SparseTensor):
                va, vb = tf.sparse.to_dense(va), tf.sparse.to_dense(vb)
            np.testing.assert_array_equal(va.numpy(), vb.numpy())


def _png_row_filters(png: bytes) -> set[int]:
    """The filter type byte of every row of a non-interlaced 8-bit PNG."""
    chunks, pos = {}, 8
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height = (int.from_bytes(chunks[b"IHDR"][i : i + 4], "big") for i in (0, 4))
    channels = {0: 1, 2: 3, 6: 4}[chunks[b"IHDR"][9]]
    rows = zlib.decompress(chunks[b"IDAT"])
    stride = 1 + width * channels
    assert len(rows) == height * stride
    return {rows[i * stride] for i in range(height)}


def test_png_tiles_round_trip_and_use_the_up_filter_on_every_row():
    # Rows filtered "up" (type 2) decode faster than libpng's adaptive choice
    # (format.encode_image); a textured tile is where adaptive would pick others.
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(64), np.arange(48)).astype(np.uint8)
    tile = np.dstack([ramp, ramp[::-1], rng.integers(0, 255, (64, 48), np.uint8)])
    mask = (ramp > 60).astype(np.uint8)
    for array in (tile, mask):
        png = fmt.encode_image(array, "png")
        assert _png_row_filters(png) == {2}
        decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        expected = array[..., ::-1] if array.ndim == 3 else array  # OpenCV decodes to BGR
        np.testing.assert_array_equal(decoded, expected)


def test_framing_is_byte_identical_to_tf_record_writer(tmp_path):
    import tensorflow as tf

    payloads = [b"", b"x", bytes(range(256)) * 40]
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
        for p in payloads:
            w.write(p)
    with ShardWriter(tmp_path / "ours.tfrecord") as ours:
        for p in payloads:
            ours.write(frame_record(p))
    assert (tmp_path / "ours.tfrecord").read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    with ShardWriter(tmp_path / "ours.tfrecord.gz", "gzip") as gz:
        for p in payloads:
            gz.write(frame_record(p))
    ds = tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord.gz"), compression_type="GZIP")
    assert [r.numpy() for r in ds] == payloads
    assert gz.result.bytes == (tmp_path / "ours.tfrecord.gz").stat().st_size


def test_gzip_build_reads_back_with_tensorflow(source, built):
    root, _ = source
    plain, _ = built
    manifest = build_records(
        data_config(root, output=root / "rec-gz", compression="gzip"), progress=False
    )
    assert all(s.path.endswith(".tfrecord.gz") for s in manifest.shards)
    zipped = read_records(manifest.shards_for_folds(), compression="GZIP")
    unzipped = read_records(plain.shards_for_folds())
    assert [r[fmt.SOURCE_ID] for r in zipped] == [r[fmt.SOURCE_ID] for r in unzipped]
    assert verify_shards(manifest) == []


def test_manifest_describes_the_build(built):
    manifest, slides = built
    m = read_manifest(manifest.root)
    assert (m.task, m.tile_height, m.tile_width, m.channels) == ("segmentation", 32, 32, 3)
    assert (m.encoding, m.compression, m.num_folds, m.format_version) == ("raw", "none", 2, 1)
    assert m.tfpipe_version == tfpipe.__version__ and m.class_names == []
    created = datetime.fromisoformat(m.created)
    assert created.tzinfo is not None and abs(datetime.now(UTC) - created) < timedelta(hours=1)
    assert set(m.sources) == set(slides)
    assert m.num_records == m.stats["records"] == sum(s.kept for s in m.sources.values())
    for sid, s in m.sources.items():
        assert s.tiles_total == s.kept + s.dropped_background + s.dropped_empty
        assert sid in m.fold_sources(s.fold)
    for fold in range(2):
        assert m.records_in_folds([fold]) == sum(m.sources[s].kept for s in m.fold_sources(fold))
    names = sorted(s.path for s in m.shards)
    assert names[0] == f"fold0-00000-of-{len([s for s in m.shards if s.fold == 0]):05d}.tfrecord"
    assert all(s.records <= 8 for s in m.shards)  # shard_records=8
    assert m.config["tile_size"] == 64 and m.config["seed"] == 7
    assert set(m.timings) == {"sources", "map", "shuffle_write", "total"}
    assert verify_shards(m) == []
    records = read_records(m.shards_for_folds())
    shape = (m.tile_height, m.tile_width, m.channels)
    tiles = np.stack([decode(r[fmt.IMAGE_ENCODED], r[fmt.IMAGE_FORMAT], shape) for r in records])
    pixels = tiles.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(m.stats["pixel_mean"], pixels.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(m.stats["pixel_std"], pixels.std(axis=0), rtol=1e-6)
    positive = [r[fmt.POSITIVE_FRACTION] for r in records]
    assert m.stats["positive_fraction_mean"] == pytest.approx(np.mean(positive), rel=1e-5)
    assert m.stats["positive_tiles"] == sum(p > 0 for p in positive)
    # Each fold's shards hold exactly the tiles of that fold's slides.
    for fold in range(2):
        ids = {
            fmt.parse_source_id(r[fmt.SOURCE_ID])[0]
            for r in read_records(m.shards_for_folds([fold]))
        }
        assert ids == set(m.fold_sources(fold))


def test_same_seed_same_bytes_whatever_the_worker_count(source, built):
    root, _ = source
    first, _ = built
    two = build_records(data_config(root, output=root / "rec-w2", workers=2), progress=False)
    assert [(s.path, s.sha256) for s in two.shards] == [(s.path, s.sha256) for s in first.shards]
    other = build_records(data_config(root, output=root / "rec-seed", seed=8), progress=False)
    ours = [r[fmt.SOURCE_ID] for r in read_records(first.shards_for_folds())]
    theirs = [r[fmt.SOURCE_ID] for r in read_records(other.shards_for_folds())]
    assert ours != theirs  # another seed: another order (and maybe other folds)...
    assert sorted(ours) == sorted(theirs)  # ...of the same tiles


def test_keep_empty_fraction_drops_tissue_tiles_without_mask(source, built):
    root, _ = source
    full, _ = built
    none = build_records(
        data_config(root, output=root / "rec-k0", keep_empty_fraction=0.0), progress=False
    )
    half = build_records(
        data_config(root, output=root / "rec-k5", keep_empty_fraction=0.5), progress=False
    )
    empties = sum(s.kept - s.positive for s in full.sources.values())
    assert empties > 4
    assert sum(s.kept - s.positive for s in none.sources.values()) == 0
    assert all(r[fmt.POSITIVE_FRACTION] > 0 for r in read_records(none.shards_for_folds()))
    kept_half = sum(s.kept - s.positive for s in half.sources.values())
    assert 0 < kept_half < empties
    assert sum(s.dropped_empty for s in half.sources.values()) == empties - kept_half


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(name))


def test_failure_mid_build_leaves_nothing(source, monkeypatch):
    root, _ = source
    real = build_module.write_folds

    def write_then_fail(tmp, *args, **kwargs):
        real(tmp, *args, **kwargs)
        assert any(tmp.glob("fold*"))  # shards were half-way there
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "write_folds", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        build_records(data_config(root, output=root / "rec-fail"), progress=False)
    assert _leftovers(root, "rec-fail") == []


def test_existing_output_is_refused_unless_overwrite(source, tmp_path, capsys):
    root, _ = source
    out = tmp_path / "records"
    out.mkdir()
    (out / "old.txt").write_text("previous dataset")
    cfg = data_config(root, output=out)
    with pytest.raises(RecordsError, match="already exists"):
        build_records(cfg, progress=False)
    experiment = _experiment(tmp_path, cfg)
    assert main(["build-records", str(experiment)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "old.txt").exists()
    assert main(["build-records", str(experiment), "--overwrite"]) == 0
    assert not (out / "old.txt").exists() and (out / "manifest.json").exists()
    assert _leftovers(tmp_path, "records") == ["records"]


def _experiment(folder: Path, cfg) -> Path:
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump({"data": cfg.model_dump(mode="json")}))
    return path


def _break(case: str, root: Path, slides: dict) -> dict:
    """Damage a copy of the dataset as ``case`` says; returns config changes."""
    rles = {k: encode_rle(m) for k, (_, m) in slides.items()}
    if case == "unreadable_tiff":
        (root / "train" / "slide1.tiff").write_bytes(b"this is not a TIFF")
    elif case == "missing_images":
        shutil.rmtree(root / "train")
    elif case == "rle_past_end":
        rles["slide1"] = f"{330 * 200 - 5} 10"
    elif case == "rle_malformed":
        rles["slide1"] = "5 3 x9 2"
    elif case == "csv_id_without_slide":
        rles["ghost"] = "1 5"
    elif case == "slide_without_row":
        del rles["slide2"]
    elif case == "mask_size":
        (root / "masks").mkdir()
        for sid, (_, mask) in slides.items():
            cv2.imwrite(
                str(root / "masks" / f"{sid}.png"), mask[:, :-3] if sid == "slide0" else mask
            )
        return dict(source="mask_images", masks=root / "masks", labels=None)
    write_rle_csv(root / "train.csv", rles)
    return {}


BAD_INPUTS = {
    "unreadable_tiff": "slide1.tiff",
    "missing_images": "data.images folder not found",
    "rle_past_end": "train.csv id=slide1",
    "rle_malformed": "got 'x9' in",
    "csv_id_without_slide": "lists id 'ghost' but there is no slide",
    "slide_without_row": "slide2.tiff has no row in",
    "mask_size": "slide0.png is 300x257 (HxW) but its slide",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_clear_errors_and_exit_code_2(source, tmp_path, case, capsys):
    root, slides = source
    copy = tmp_path / "data"
    shutil.copytree(root / "train", copy / "train")
    shutil.copy(root / "train.csv", copy / "train.csv")
    cfg = data_config(copy, **_break(case, copy, slides))
    with pytest.raises(TfpipeError, match=re.escape(BAD_INPUTS[case])) as err:
        build_records(cfg, progress=False)
    if case != "missing_images":
        assert isinstance(err.value, InputDataError)
    assert main(["build-records", str(_experiment(tmp_path, cfg))]) == 2
    message = capsys.readouterr().err
    assert BAD_INPUTS[case] in message and "Traceback" not in message
    assert not (copy / "records").exists()


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_slides_give_the_records_of_their_uint8_twins(source, built, tmp_path, scale):
    # 0-255 floats were once clipped to [0, 1] (white); the slide's maximum now picks the range.
    root, slides = source
    uint8_build, _ = built
    (tmp_path / "train").mkdir()
    for sid, (image, _) in slides.items():
        pixels = image.astype(np.float32) * np.float32(scale / 255)
        tifffile.imwrite(tmp_path / "train" / f"{sid}.tiff", pixels, photometric="rgb")
    shutil.copy(root / "train.csv", tmp_path / "train.csv")
    manifest = build_records(data_config(tmp_path, output=tmp_path / "records"), progress=False)
    assert [s.sha256 for s in manifest.shards] == [s.sha256 for s in uint8_build.shards]


def _blank(root: Path, copy: Path, slide_ids: list[str]) -> None:
    """A copy of the dataset with ``slide_ids`` replaced by white slides (masks unchanged)."""
    shutil.copytree(root / "train", copy / "train")
    shutil.copy(root / "train.csv", copy / "train.csv")
    for sid, (h, w) in zip(["slide0", "slide1", "slide2"], SIZES, strict=True):
        if sid in slide_ids:
            write_tiff(copy / "train" / f"{sid}.tiff", np.full((h, w, 3), 255, np.uint8))


def test_a_blank_slide_is_reported(source, tmp_path):
    root, _ = source
    _blank(root, tmp_path, ["slide1"])
    with pytest.warns(UserWarning, match=r"slide slide1 came out blank: no tile has") as seen:
        manifest = build_records(data_config(tmp_path), progress=False)
    blank = manifest.sources["slide1"]
    assert blank.kept == blank.tiles_total - blank.dropped_background > 0  # its positive tiles
    assert f"{blank.kept} of its {blank.tiles_total} tiles were written" in str(seen[0].message)
    assert [str(w.message).split(":")[0] for w in seen] == ["slide slide1 came out blank"]


def test_every_slide_blank_is_an_error(source, tmp_path, capsys):
    root, _ = source
    _blank(root, tmp_path / "data", ["slide0", "slide1", "slide2"])
    cfg = data_config(tmp_path / "data")
    with pytest.raises(InputDataError, match=r"every slide in .* came out blank \(3 slide"):
        build_records(cfg, progress=False)
    assert main(["build-records", str(_experiment(tmp_path, cfg))]) == 2
    assert "came out blank" in capsys.readouterr().err
    assert not cfg.output.exists()


def test_mask_images_give_the_same_records_as_rle(source, built, tmp_path):
    root, slides = source
    rle_build, _ = built
    masks = tmp_path / "masks"
    masks.mkdir()
    for sid, (_, mask) in slides.items():
        cv2.imwrite(str(masks / f"{sid}_mask.png"), mask * 255)  # 0/255 masks read as 0/1
    cfg = data_config(
        root, source="mask_images", masks=masks, labels=None, output=tmp_path / "records"
    )
    manifest = build_records(cfg, progress=False)
    assert [s.sha256 for s in manifest.shards] == [s.sha256 for s in rle_build.shards]


def test_unlabelled_records_have_no_mask(source, tmp_path):
    root, _ = source
    cfg = data_config(root, source="unlabelled", labels=None, output=tmp_path / "records")
    manifest = build_records(cfg, progress=False)
    assert manifest.task == "unlabelled"
    assert sum(s.dropped_empty for s in manifest.sources.values()) == 0
    records = read_records(manifest.shards_for_folds(), task="unlabelled")
    assert len(records) == manifest.num_records > 0
    assert all(fmt.MASK_ENCODED not in r for r in records)
    from tfpipe.records.reader import iter_records, parse_example

    first = parse_example(next(iter_records(manifest.shards_for_folds()[0])))
    assert fmt.MASK_ENCODED not in first and fmt.SOURCE_ID in first


def _classification_set(root: Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Five small images (gray and RGB, not all square) and ``root/labels.csv``."""
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    shapes = [(40, 60), (64, 64, 3), (80, 50, 3), (64, 64), (30, 30, 3)]
    labels = [["nodule"], ["effusion", "nodule"], [], ["mass"], ["effusion"]]
    items = {}
    rows = ["path,labels"]
    for i, (shape, names) in enumerate(zip(shapes, labels, strict=True)):
        image = rng.integers(0, 255, shape, dtype=np.uint8)
        cv2.imwrite(
            str(root / "images" / f"x{i}.png"), image[..., ::-1] if image.ndim == 3 else image
        )
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        items[f"images/x{i}.png"] = (rgb, names)
        rows.append(f"images/x{i}.png,{'|'.join(names)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return items


def test_classification_records_carry_multi_hot_labels(tmp_path):
    items = _classification_set(tmp_path)
    cfg = data_config(
        tmp_path,
        source="classification",
        images=tmp_path,
        labels=tmp_path / "labels.csv",
        output=tmp_path / "records",
    )
    manifest = build_records(cfg, progress=False)
    assert manifest.task == "classification"
    assert manifest.class_names == ["effusion", "mass", "nodule"]
    assert manifest.num_records == 5 and set(manifest.sources) == set(items)
    records = read_records(manifest.shards_for_folds(), task="classification")
    for rec in records:
        image_id, y, x = fmt.parse_source_id(rec[fmt.SOURCE_ID])
        rgb, names = items[image_id]
        hot = [int(n in names) for n in manifest.class_names]
        assert rec[fmt.CLASS_LABEL].tolist() == hot and (y, x) == (0, 0)
        side = max(rgb.shape[:2])
        square = np.zeros((side, side, 3), np.uint8)
        square[: rgb.shape[0], : rgb.shape[1]] = rgb
        expected = cv2.resize(square, (32, 32), interpolation=cv2.INTER_AREA)
        image = decode(rec[fmt.IMAGE_ENCODED], rec[fmt.IMAGE_FORMAT], expected.shape)
        np.testing.assert_array_equal(image, expected)
    with pytest.raises(InputDataError, match=r"not in data\.class_names"):
        cfg.class_names = ["mass", "nodule"]
        cfg.output = tmp_path / "records-2"
        build_records(cfg, progress=False)


@pytest.mark.timeout(180)
def test_the_etl_never_imports_tensorflow():
    # Workers import WORKER_MODULES; the main process imports build and inspect.
    code = (
        "import importlib, sys\n"
        "from tfpipe.records.workers import WORKER_MODULES\n"
        "for name in (*WORKER_MODULES, 'tfpipe.records.build', 'tfpipe.records.inspect'):\n"
        "    importlib.import_module(name)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
