"""Synthetic demo data: HuBMAP-layout slides with RLE truth, and the classification set."""

import hashlib

import cv2
import numpy as np
import pytest
import tifffile

from tfpipe.errors import TfpipeError
from tfpipe.io import decode_rle, encode_rle, open_slide, read_label_csv, read_rle_csv
from tfpipe.synthetic import datasets as demo
from tfpipe.synthetic.slides import blob_radius, plan_slide, render_window

SIZE = 1536


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return demo.make_demo_data(tmp_path_factory.mktemp("demo") / "hubmap", n=2, size=SIZE, seed=3)


def digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def read_whole(path, backend="tifffile"):
    with open_slide(path, backend=backend) as slide:
        return slide.read_window(0, 0, slide.height, slide.width)


def test_layout_files_and_ids(dataset):
    train = read_rle_csv(dataset / "train.csv")
    test = read_rle_csv(dataset / "test.csv")
    assert (dataset / "train.csv").read_text().startswith("id,encoding\n")
    assert sorted(p.stem for p in (dataset / "train").glob("*.tiff")) == sorted(train)
    assert sorted(p.stem for p in (dataset / "test").glob("*.tiff")) == sorted(test)
    assert len(train) == 2 and len(test) == 1 and not set(train) & set(test)
    assert all(len(i) == 9 for i in [*train, *test])
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_slides_use_the_promised_tiff_layouts(dataset):
    train = read_rle_csv(dataset / "train.csv")
    order = [plan_slide(3, i, SIZE).image_id for i in range(2)]
    assert sorted(order) == sorted(train)
    with tifffile.TiffFile(dataset / "train" / f"{order[0]}.tiff") as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (512, 512)
        assert page.compression.name == "ZSTD" and page.planarconfig == 1  # interleaved
    with tifffile.TiffFile(dataset / "train" / f"{order[1]}.tiff") as tif:
        assert not tif.pages[0].is_tiled and tif.pages[0].rowsperstrip == 64
    (held_out,) = (dataset / "test").glob("*.tiff")
    with tifffile.TiffFile(held_out) as tif:
        assert tif.is_bigtiff


def test_sizes_vary_and_avoid_tile_multiples(dataset):
    shapes = []
    for path in sorted(dataset.rglob("*.tiff")):
        with open_slide(path) as slide:
            shapes.append((slide.height, slide.width))
            assert slide.channels == 3
    for h, w in shapes:
        assert 0.8 * SIZE <= h <= 1.2 * SIZE + 37 and 0.8 * SIZE <= w <= 1.2 * SIZE + 37
        assert h % 512 and w % 512
    assert len(set(shapes)) == len(shapes)


@pytest.mark.parametrize("split", ["train", "test"])
def test_rle_decodes_to_blobs_on_tissue(dataset, split):
    rles = read_rle_csv(dataset / f"{split}.csv")
    for image_id, rle in rles.items():
        image = read_whole(dataset / split / f"{image_id}.tiff")
        mask = decode_rle(rle, image.shape[:2], source=f"{split}.csv id={image_id}")
        assert mask.sum() > 0, f"{image_id} has no blob"
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        tissue = (hsv[..., 1] > 40) & (image.max(axis=-1) < 220)  # kidney.yaml filter
        # Glomeruli (dense purple, or smooth eosin pink when sclerotic) are darker in red
        # than the surrounding tissue.
        blob_pixels = image[mask > 0].astype(float)
        assert tissue[mask > 0].mean() > 0.95
        assert blob_pixels[:, 0].mean() < image[tissue & (mask == 0)][:, 0].mean() - 20
        # Past the pale ring, blobs are surrounded by tissue, not background.
        near = cv2.dilate(mask, np.ones((121, 121), np.uint8))
        ringed = cv2.dilate(mask, np.ones((81, 81), np.uint8))
        band = (near > 0) & (ringed == 0)
        assert tissue[band].mean() > 0.7


def test_tissue_covers_half_to_most_of_each_slide(dataset):
    for path in sorted(dataset.rglob("*.tiff")):
        image = read_whole(path)
        background = (image.min(axis=-1) > 235).mean()
        assert 0.2 < background < 0.6, f"{path.name}: background fraction {background:.2f}"


def test_rle_matches_rendered_blobs_and_file_matches_render(dataset):
    plan = plan_slide(3, 0, SIZE)
    full = np.zeros((plan.height, plan.width), np.uint8)
    for blob in plan.blobs:
        if blob.glomerulus:
            full |= (blob_radius(blob, 0, 0, plan.height, plan.width) < 1).astype(np.uint8)
    assert demo.slide_rle(plan) == encode_rle(full)
    assert read_rle_csv(dataset / "train.csv")[plan.image_id] == encode_rle(full)
    tile = render_window(plan, 512, 0, 512, 512)
    on_disk = read_whole(dataset / "train" / f"{plan.image_id}.tiff")
    np.testing.assert_array_equal(on_disk[512:1024, :512], tile)


def test_both_backends_read_every_slide_identically(dataset):
    for path in sorted(dataset.rglob("*.tiff")):
        np.testing.assert_array_equal(read_whole(path, "tifffile"), read_whole(path, "rasterio"))


def test_deterministic_for_a_seed(dataset, tmp_path):
    again = demo.make_demo_data(tmp_path / "again", n=2, size=SIZE, seed=3)
    assert digest(again) == digest(dataset)
    other = demo.make_demo_data(tmp_path / "other", n=1, size=SIZE, seed=4)
    assert (other / "train.csv").read_text() != (dataset / "train.csv").read_text()


def test_refuses_non_empty_dir_unless_overwrite(tmp_path):
    out = demo.make_demo_data(tmp_path / "d", n=1, size=512, seed=0)
    with pytest.raises(TfpipeError, match=r"must be new or empty .*got non-empty .*d"):
        demo.make_demo_data(out, n=1, size=512, seed=0)
    (out / "extra.txt").write_text("x")
    demo.make_demo_data(out, n=1, size=512, seed=1, overwrite=True)
    assert not (out / "extra.txt").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(TfpipeError, match=r"has no train\.csv; it was left untouched"):
        demo.make_demo_data(foreign, n=1, size=512, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    calls = []

    def failing_write(plan, path, strips=False, bigtiff=False):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        path.write_bytes(b"partial")

    monkeypatch.setattr(demo, "write_slide", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.make_demo_data(tmp_path / "out", n=3, size=512)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments():
    with pytest.raises(TfpipeError, match=r"n >= 1 and size >= 256; got n=0, size=512"):
        demo.make_demo_data("/nonexistent/x", n=0, size=512)
    with pytest.raises(TfpipeError, match=r"subset of .*got \('ring', 'cat'\)"):
        demo.make_demo_classification("/nonexistent/x", classes=("ring", "cat"))


# ------------------------------------------------------------------ classification


def test_classification_layout_and_labels(tmp_path):
    root = demo.make_demo_classification(tmp_path / "cxr", n=120, size=64, seed=0)
    items, classes = read_label_csv(root / "labels.csv", root)
    assert classes == sorted(demo.PATTERNS)
    assert len(items) == 120 and len(list((root / "images").glob("*.png"))) == 120
    image = cv2.imread(str(items[0][0]), cv2.IMREAD_UNCHANGED)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    prevalence = {c: np.mean([c in labels for _, labels in items]) for c in classes}
    assert all(0.15 < p < 0.45 for p in prevalence.values()), prevalence
    assert any(not labels for _, labels in items)
    assert any(len(labels) >= 2 for _, labels in items)


def test_classification_deterministic_and_class_subset(tmp_path):
    a = demo.make_demo_classification(tmp_path / "a", n=20, size=48, seed=5, classes=("dots",))
    b = demo.make_demo_classification(tmp_path / "b", n=20, size=48, seed=5, classes=("dots",))
    assert digest(a) == digest(b)
    _, classes = read_label_csv(a / "labels.csv", a)
    assert classes == ["dots"]


def test_patterns_change_the_pixels(tmp_path):
    from tfpipe.synthetic.xray import draw_image

    for name in demo.PATTERNS:
        plain = draw_image(np.random.default_rng(9), 96, []).astype(int)
        marked = draw_image(np.random.default_rng(9), 96, [name]).astype(int)
        changed = np.abs(marked - plain).max(axis=-1) > 30
        assert 0.002 < changed.mean() < 0.25, name


@pytest.mark.slow
def test_classification_is_learnable_by_a_small_cnn(tmp_path):
    import keras

    root = demo.make_demo_classification(tmp_path / "cxr", n=480, size=64, seed=1)
    items, classes = read_label_csv(root / "labels.csv", root)
    x = np.stack([cv2.imread(str(p))[..., ::-1] for p, _ in items]).astype("float32") / 255
    y = np.array([[c in labels for c in classes] for _, labels in items], "float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            *[
                layer
                for f in (16, 32, 64)
                for layer in (
                    keras.layers.Conv2D(f, 3, activation="relu"),
                    keras.layers.MaxPool2D(),
                )
            ],
            keras.layers.GlobalMaxPool2D(),
            keras.layers.Dense(len(classes), activation="sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy")
    model.fit(x[:400], y[:400], epochs=8, batch_size=32, verbose=0)
    scores = model.predict(x[400:], verbose=0)
    auc = keras.metrics.AUC(multi_label=True, num_labels=len(classes))
    for k in range(len(classes)):
        auc.reset_state()
        auc.update_state(y[400:, k : k + 1], scores[:, k : k + 1])
        assert float(auc.result()) > 0.75, (classes[k], float(auc.result()))
