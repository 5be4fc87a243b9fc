"""inspect-records: counts, checksums, record counts, the contact sheet, CLI exit codes."""

import gzip
import json
import shutil

import cv2
import pytest

from tests._records_helpers import data_config, make_dataset
from tfpipe.cli import main
from tfpipe.errors import RecordsError
from tfpipe.records.build import build_records
from tfpipe.records.inspect import inspect_records
from tfpipe.records.reader import FrameCount, count_frames, iter_records
from tfpipe.records.sheet import CAPTION, CELL
from tfpipe.records.writer import frame_record


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    make_dataset(root, [(256, 256), (192, 300)])
    return build_records(data_config(root), progress=False)


def test_report_counts_and_sheet(records, tmp_path, capsys):
    report = inspect_records(records.root, sheet=tmp_path / "sheet.png", n_tiles=10, seed=3)
    out = capsys.readouterr().out
    assert report.ok and report.problems == []
    assert report.records == records.num_records
    assert report.records_per_fold == {
        k: records.records_in_folds([k]) for k in range(records.num_folds)
    }
    assert len(report.sampled) == 10 and len(set(report.sampled)) == 10
    assert "all shards match their size, sha256 and record count" in out and "slide0" in out
    sheet = cv2.imread(str(report.sheet))
    assert sheet is not None and sheet.shape[0] > 2 * (CELL + CAPTION) and sheet.shape[1] > 8 * CELL
    again = inspect_records(records.root, sheet=tmp_path / "again.png", n_tiles=10, seed=3)
    assert again.sampled == report.sampled
    other = inspect_records(records.root, sheet=tmp_path / "other.png", n_tiles=10, seed=4)
    assert other.sampled != report.sampled


def test_default_sheet_goes_into_the_records_folder(records, tmp_path):
    copy = tmp_path / "records"
    shutil.copytree(records.root, copy)
    report = inspect_records(copy, n_tiles=100)  # more than there are: all records
    assert report.sheet == copy / "sheet.png" and report.sheet.is_file()
    assert len(report.sampled) == records.num_records


def test_corrupt_shard_is_reported(records, tmp_path, capsys):
    copy = tmp_path / "records"
    shutil.copytree(records.root, copy)
    shard = sorted(copy.glob("fold1-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = inspect_records(copy, n_tiles=0)
    assert not report.ok
    assert any(shard.name in p and "sha256" in p for p in report.problems)
    with pytest.raises(RecordsError, match="CRC"):
        list(iter_records(shard))
    assert main(["inspect-records", str(copy), "--tiles", "0"]) == 1
    assert "problem:" in capsys.readouterr().out
    (copy / sorted(p.name for p in copy.glob("fold0-*"))[0]).unlink()
    assert any("missing" in p for p in inspect_records(copy, n_tiles=0).problems)


def test_missing_folder_is_an_error_with_exit_code_2(tmp_path, capsys):
    with pytest.raises(RecordsError, match="records folder not found"):
        inspect_records(tmp_path / "nope")
    assert main(["inspect-records", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "records folder not found" in err and "Traceback" not in err


def test_a_manifest_count_that_differs_from_the_shard_is_reported(records, tmp_path, capsys):
    # The shard's bytes still match their sha256: only counting its records shows it.
    copy = tmp_path / "records"
    shutil.copytree(records.root, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    low, high = raw["shards"][0], raw["shards"][-1]
    held = low["records"], high["records"]
    low["records"] -= 1
    high["records"] += 5
    (copy / "manifest.json").write_text(json.dumps(raw))
    report = inspect_records(copy, n_tiles=0)
    assert report.problems == [
        f"{copy / low['path']}: manifest.json lists {held[0] - 1} records, "
        f"its TFRecord framing holds {held[0]}",
        f"{copy / high['path']}: manifest.json lists {held[1] + 5} records, "
        f"its TFRecord framing holds {held[1]}",
    ]
    assert main(["inspect-records", str(copy), "--tiles", "0"]) == 1
    assert "all shards match" not in capsys.readouterr().out


def test_count_frames_reads_the_framing(tmp_path):
    path = tmp_path / "x.tfrecord"
    frames = [frame_record(bytes([k]) * (k * 700)) for k in range(12)]  # some span 4 KiB blocks
    path.write_bytes(b"".join(frames))
    assert count_frames(path) == FrameCount(12)
    path.write_bytes(b"")
    assert count_frames(path) == FrameCount(0)
    whole = b"".join(frames)
    for cut, records in ((1, 11), (len(frames[-1]) - 5, 11), (len(frames[-1]) + 3, 10)):
        path.write_bytes(whole[:-cut])
        counted = count_frames(path)
        assert counted.records == records
        assert counted.damage == f"record {records} is truncated: the file ends at byte " + (
            f"{len(whole) - cut}, inside it"
        )
    damaged = bytearray(whole)
    start = sum(len(f) for f in frames[:5])
    damaged[start + 1] ^= 0x10  # the length of record 5
    path.write_bytes(bytes(damaged))
    assert count_frames(path) == FrameCount(5, f"record 5 has a bad length CRC at byte {start}")
    damaged[start + 1] ^= 0x10
    damaged[start + 20] ^= 0x10  # inside record 5's data: the framing cannot see it
    path.write_bytes(bytes(damaged))
    assert count_frames(path) == FrameCount(12)


def test_count_frames_of_gzip_shards(tmp_path):
    path = tmp_path / "x.tfrecord.gz"
    data = gzip.compress(b"".join(frame_record(b"r" * k) for k in range(7)))
    path.write_bytes(data)
    assert count_frames(path, "gzip") == FrameCount(7)
    path.write_bytes(data[: len(data) // 2])
    counted = count_frames(path, "gzip")
    assert counted.records < 7 and counted.damage is not None
