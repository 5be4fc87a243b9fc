"""RLE CSVs, mask images beside slides, classification label CSVs."""

import cv2
import numpy as np
import pytest
import tifffile

from tfpipe.errors import InputDataError
from tfpipe.io.masks import open_mask_image, read_label_csv, read_rle_csv, write_rle_csv


def write_text(path, text: str):
    path.write_text(text)
    return path


# ----------------------------------------------------------------------- RLE CSVs


def test_read_train_csv_encoding_column(tmp_path):
    path = write_text(tmp_path / "train.csv", "id,encoding\naaa,1 3 10 2\nbbb,\n")
    assert read_rle_csv(path) == {"aaa": "1 3 10 2", "bbb": ""}


def test_read_submission_predicted_column(tmp_path):
    path = write_text(tmp_path / "sub.csv", "id,predicted\nx1,5 5\n")
    assert read_rle_csv(path) == {"x1": "5 5"}


def test_read_rle_csv_custom_columns_and_long_field(tmp_path):
    rle = " ".join(f"{1 + 10 * i} 3" for i in range(60_000))  # > csv's 128 KiB default
    path = write_text(tmp_path / "m.csv", f"image,mask,other\nq,{rle},z\n")
    assert read_rle_csv(path, id_column="image", rle_column="mask") == {"q": rle}


def test_write_then_read_round_trip_is_atomic(tmp_path):
    out = tmp_path / "deep" / "submission.csv"
    rles = {"a": "1 2", "b": "", "c": "7 1 9 4"}
    write_rle_csv(out, rles)
    assert out.read_text().splitlines()[0] == "id,predicted"
    assert read_rle_csv(out) == rles
    assert [p.name for p in out.parent.iterdir()] == ["submission.csv"]  # no temp left


def test_write_failure_leaves_old_file_and_no_temp(tmp_path):
    out = tmp_path / "submission.csv"
    write_rle_csv(out, {"a": "1 2"})

    class Boom(dict):
        def items(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_rle_csv(out, Boom())
    assert read_rle_csv(out) == {"a": "1 2"}
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def test_write_encoding_column(tmp_path):
    out = tmp_path / "train.csv"
    write_rle_csv(out, {"s1": "1 1"}, rle_column="encoding")
    assert out.read_text().splitlines() == ["id,encoding", "s1,1 1"]


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        (
            "id,mask\na,1 2\n",
            {},
            r"'encoding' \(train.csv\) or 'predicted'.*\['id', 'mask'\]",
        ),
        ("name,encoding\na,1 2\n", {}, r"missing column\(s\) \['id'\]"),
        ("id,encoding\na,1 2\n", {"rle_column": "rle"}, r"missing column\(s\) \['rle'\]"),
        ("id,encoding\na,1 2\nb,\na,3 4\n", {}, r"id 'a' is on lines 2 and 4"),
        ("id,encoding\n,1 2\n", {}, r"line 2: column 'id' is empty"),
        ("", {}, r"is empty; expected a header line"),
    ],
)
def test_rle_csv_errors_name_file_and_problem(tmp_path, text, kwargs, message):
    path = write_text(tmp_path / "bad.csv", text)
    with pytest.raises(InputDataError, match=message) as err:
        read_rle_csv(path, **kwargs)
    assert "bad.csv" in str(err.value)


def test_missing_rle_csv(tmp_path):
    with pytest.raises(InputDataError, match=r"CSV file not found: .*none\.csv"):
        read_rle_csv(tmp_path / "none.csv")


# -------------------------------------------------------------------- mask images


@pytest.fixture
def labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4, (90, 130)).astype(np.uint8)


def padded(values: np.ndarray, y: int, x: int, h: int, w: int) -> np.ndarray:
    big = np.pad(values, 200)
    return big[y + 200 : y + 200 + h, x + 200 : x + 200 + w]


WINDOWS = [(0, 0, 32, 32), (10, 17, 40, 50), (-8, -8, 32, 32), (70, 110, 40, 40), (95, 0, 5, 5)]


@pytest.mark.parametrize("suffix", [".tiff", ".png"])
def test_mask_image_windows_binary_and_class_ids(tmp_path, labels, suffix):
    path = tmp_path / f"mask{suffix}"
    if suffix == ".png":
        cv2.imwrite(str(path), labels)
    else:
        tifffile.imwrite(path, labels, tile=(32, 32))
    with open_mask_image(path) as binary, open_mask_image(path, binary=False) as ids:
        assert (binary.height, binary.width) == labels.shape
        for y, x, h, w in WINDOWS:
            np.testing.assert_array_equal(
                binary.read_window(y, x, h, w), padded((labels > 0).astype(np.uint8), y, x, h, w)
            )
            np.testing.assert_array_equal(ids.read_window(y, x, h, w), padded(labels, y, x, h, w))


def test_rgb_png_mask_any_channel_counts(tmp_path):
    mask = np.zeros((20, 30, 3), np.uint8)
    mask[2:5, 3:9, 2] = 255  # red only, written as BGR by OpenCV below
    mask[10:12, 20:25, 0] = 7
    path = tmp_path / "rgb_mask.png"
    cv2.imwrite(str(path), mask)
    with open_mask_image(path) as m:
        got = m.read_window(0, 0, 20, 30)
    np.testing.assert_array_equal(got, mask.any(axis=-1).astype(np.uint8))


def test_uint16_tiff_class_ids_kept_not_scaled(tmp_path):
    values = np.zeros((40, 40), np.uint16)
    values[5:10, 5:10] = 3
    path = tmp_path / "ids.tif"
    tifffile.imwrite(path, values)
    with open_mask_image(path, binary=False) as m:
        assert m.read_window(0, 0, 40, 40).max() == 3
    values[0, 0] = 300
    tifffile.imwrite(path, values)
    with open_mask_image(path, binary=False) as m, pytest.raises(InputDataError, match="300"):
        m.read_window(0, 0, 40, 40)


def test_mask_image_missing_or_undecodable(tmp_path):
    with pytest.raises(InputDataError, match=r"mask image not found: .*gone\.png"):
        open_mask_image(tmp_path / "gone.png")
    junk = write_text(tmp_path / "junk.png", "not a png")
    with pytest.raises(InputDataError, match=r"cannot decode mask image .*junk\.png"):
        open_mask_image(junk)


# ---------------------------------------------------------------- label CSVs


def make_images(root, names):
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(root / "images" / name), np.zeros((4, 4), np.uint8))


def test_read_label_csv(tmp_path):
    make_images(tmp_path, ["a.png", "b.png", "c.png"])
    csv_path = write_text(
        tmp_path / "labels.csv",
        "path,labels\nimages/a.png,ring|dots\nimages/b.png,\nimages/c.png, blob | ring \n",
    )
    items, classes = read_label_csv(csv_path, tmp_path)
    assert classes == ["blob", "dots", "ring"]
    assert [(p.name, labels) for p, labels in items] == [
        ("a.png", ["ring", "dots"]),
        ("b.png", []),
        ("c.png", ["blob", "ring"]),
    ]
    assert all(p.is_absolute() and p.is_file() for p, _ in items)


def test_label_csv_missing_image_names_row(tmp_path):
    make_images(tmp_path, ["a.png"])
    csv_path = write_text(tmp_path / "labels.csv", "path,labels\nimages/a.png,x\nimages/zz.png,y\n")
    with pytest.raises(InputDataError, match=r"labels\.csv line 3: image 'images/zz.png'"):
        read_label_csv(csv_path, tmp_path)


def test_label_csv_missing_columns_and_file(tmp_path):
    csv_path = write_text(tmp_path / "labels.csv", "file,labels\na.png,x\n")
    with pytest.raises(InputDataError, match=r"missing column\(s\) \['path'\]"):
        read_label_csv(csv_path, tmp_path)
    with pytest.raises(InputDataError, match="CSV file not found"):
        read_label_csv(tmp_path / "nope.csv", tmp_path)
