"""Damaged records never hang a process: every case ends with one clear error.

Each case damages a copy of one tiny records folder (two folds, one shard of
16 PNG tiles each) and runs either the library (one epoch of
``tfpipe.data.load()``) or ``tfpipe train`` (the tiny model of
``_train_helpers``).

Cases: a flipped byte inside a record's data (the framing is intact, so only
reading finds it), a record whose CRC is valid but whose image is not a PNG,
a truncated shard, and a manifest listing 5 records more and 5 fewer than
the shard holds. The first two are found mid-epoch, with tf.data's threads
running: they run in a fresh Python process each, and a process that is not
done within ``LIMIT_S`` fails the test as "hung" (the hang check, not a
timing assertion; a case takes ~5-15 s, most of it importing TensorFlow).
They run two at a time (the test machine has 2 cores), all started by one
module fixture. The last three the framing shows at ``load()``, before any
pipeline runs: ``RecordsError`` there, and one line with exit status 2 from
``tfpipe train``, checked in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests._train_helpers import CHILD_PRELUDE, disc_tile, use_tiny_model
from tfpipe.cli.input_errors import damaged_records_as_errors, describe_damage
from tfpipe.errors import RecordsError
from tfpipe.records import format as fmt
from tfpipe.records.example import serialize_example
from tfpipe.records.manifest import Manifest, ShardInfo, SourceStats, write_manifest
from tfpipe.records.reader import iter_records
from tfpipe.records.writer import ShardWriter, frame_record

LIMIT_S = 180
# Hang guard for the test process itself: the `outcomes` fixture runs 5 subprocesses two at a
# time, each killed after LIMIT_S, in the first test that asks for it.
pytestmark = pytest.mark.timeout(3 * LIMIT_S + 120)
PER_SHARD = 16
DAMAGED = "fold1-00001-of-00002.tfrecord"  # a training shard when validating on fold 0
SHARD = rf"\S*/records/{re.escape(DAMAGED)}"  # the damaged shard in any copy of the records
READ_CASES = ("flipped", "bad_png")  # found while reading: subprocesses
FRAMING_CASES = ("truncated", "count_plus5", "count_minus5")  # found at load(): in-process

LIBRARY = textwrap.dedent(
    """
    import sys
    import tfpipe.data as td

    batches = sum(1 for _ in td.load(sys.argv[1], batch_size=4))
    print("epoch done:", batches, "batches")
    """
)

TRAIN = CHILD_PRELUDE + textwrap.dedent(
    """
    from tfpipe.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)

# Reads one batch of an endless, augmented stream at module level and leaves:
# decoding and augmentation are in flight while the interpreter shuts down.
ONE_BATCH = textwrap.dedent(
    """
    import sys
    import tfpipe.data as td

    augment = {"flip": True, "rot90": True, "brightness": 0.1, "contrast": 0.1, "hue": 0.02}
    batch = next(iter(td.load(sys.argv[1], batch_size=4, augment=augment, repeat=True)))
    print("read", tuple(batch[0].shape), flush=True)
    """
)


@dataclass
class Outcome:
    """What one subprocess did (``hung`` when it ran past ``LIMIT_S`` and was killed)."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    hung: bool = False

    def explain(self) -> str:
        state = f"HUNG (killed after {LIMIT_S} s)"
        if not self.hung:
            state = f"exit {self.returncode} after {self.seconds:.1f} s"
        return f"{state}\n--- stdout\n{self.stdout[-1500:]}\n--- stderr\n{self.stderr[-3000:]}"


def run_python(code: str, *args: str) -> Outcome:
    """Run ``python -c code args`` with the hang limit.

    TensorFlow's C++ log level is set as the ``tfpipe`` command sets it before
    TensorFlow loads (the train child imports TensorFlow before ``main``).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
            env=env,
        )
    except subprocess.TimeoutExpired as err:
        return Outcome(None, _text(err.stdout), _text(err.stderr), LIMIT_S, hung=True)
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


# ------------------------------------------------------------------ records


def write_tiny_records(root: Path) -> Path:
    """Two folds, one shard of ``PER_SHARD`` PNG disc tiles each, written without TensorFlow."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    shards, sources = [], {}
    for fold in range(2):
        name = fmt.shard_name(fold, fold, 2)
        with ShardWriter(root / name) as writer:
            for k in range(PER_SHARD):
                image, mask = disc_tile(rng, 32)
                writer.write(frame_record(_example(image, mask, f"img{fold}:{32 * k}:0")))
        done = writer.result
        shards.append(ShardInfo(name, fold, done.records, done.bytes, done.sha256))
        sources[f"img{fold}"] = SourceStats(fold=fold, kept=PER_SHARD)
    manifest = Manifest(
        root=root,
        task="segmentation",
        tile_height=32,
        tile_width=32,
        channels=3,
        encoding="png",
        compression="none",
        num_folds=2,
        shards=shards,
        sources=sources,
        created="test",
    )
    write_manifest(manifest)
    return root


def _example(image: bytes | np.ndarray, mask: np.ndarray, sid: str) -> bytes:
    encoded = image if isinstance(image, bytes) else fmt.encode_image(image, "png")
    return serialize_example(
        encoded,
        "png",
        (32, 32, 3),
        source_id=sid,
        mask=fmt.encode_image(mask, "png"),
        mask_format="png",
        positive_fraction=float(mask.mean()),
    )


def damage(root: Path, case: str) -> None:
    """Apply one kind of damage to the shard ``DAMAGED`` of a records folder."""
    shard = root / DAMAGED
    if case == "flipped":
        data = bytearray(shard.read_bytes())
        offset = 0
        for _ in range(PER_SHARD // 2):  # to record 8
            offset += 16 + int.from_bytes(data[offset : offset + 8], "little")
        length = int.from_bytes(data[offset : offset + 8], "little")
        data[offset + 12 + length // 2] ^= 0xFF  # inside its data: the framing stays intact
        shard.write_bytes(bytes(data))
    elif case == "truncated":
        shard.write_bytes(shard.read_bytes()[:-30])
    elif case in ("count_plus5", "count_minus5"):
        _edit_manifest(root, records=PER_SHARD + (5 if case == "count_plus5" else -5))
    elif case == "bad_png":
        records = list(iter_records(shard))
        mask = np.zeros((32, 32), np.uint8)
        records[8] = _example(b"this is not a PNG file", mask, "img1:256:0")
        with ShardWriter(shard) as writer:
            for record in records:
                writer.write(frame_record(record))
        # A consistent manifest: only decoding the tile can find the damage.
        _edit_manifest(root, bytes=writer.result.bytes, sha256=writer.result.sha256)
    else:
        raise ValueError(case)


def _edit_manifest(root: Path, **changes: object) -> None:
    path = root / "manifest.json"
    raw = json.loads(path.read_text())
    (entry,) = [s for s in raw["shards"] if s["path"] == DAMAGED]
    entry.update(changes)
    path.write_text(json.dumps(raw))


def train_args(records: Path, tmp: Path) -> list[str]:
    """``tfpipe train`` on ``records`` for one short epoch, validating on fold 0."""
    experiment = tmp / "damaged.yaml"
    experiment.write_text("name: damaged\n")
    settings = [
        f"data.output={records}",
        f"train.runs_dir={tmp / 'runs'}",
        "input.batch_size=4",
        "input.shuffle_buffer=16",
        "input.augment.flip=false",
        "input.augment.rot90=false",
        "train.epochs=1",
        f"train.steps_per_epoch={PER_SHARD // 4}",  # the whole damaged shard in epoch 1
        "train.schedule=constant",
        "train.mixed_precision=off",
    ]
    return ["train", str(experiment), "--fold", "0", *(f"--set={s}" for s in settings)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_records(tmp_path_factory.mktemp("damaged") / "records")


@pytest.fixture(scope="module")
def outcomes(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every default case, run two processes at a time: ``{"library/flipped": Outcome, ...}``."""
    jobs = {}
    for case in READ_CASES:
        for kind in ("library", "train"):
            tmp = tmp_path_factory.mktemp(f"{kind}-{case}")
            records = tmp / "records"
            shutil.copytree(base, records)
            damage(records, case)
            if kind == "library":
                jobs[f"{kind}/{case}"] = (LIBRARY, str(records))
            else:
                jobs[f"{kind}/{case}"] = (TRAIN, *train_args(records, tmp))
    jobs["exit"] = (ONE_BATCH, str(base))  # 20 times over in the slow test below
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_python, *job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("flipped", r"tfpipe\.data: shard {shard} is corrupt or truncated"),
        ("bad_png", r"InvalidArgumentError: .*(Invalid PNG|Unknown image file format)"),
    ],
)
def test_library_raises_a_clear_error_and_exits(outcomes, case, expected):
    outcome = outcomes[f"library/{case}"]
    assert not outcome.hung and outcome.returncode == 1, outcome.explain()
    assert "epoch done" not in outcome.stdout
    assert re.search(expected.format(shard=SHARD), outcome.stderr), outcome.explain()


FRAMING_ERRORS = {
    "truncated": r"shard {shard} is truncated or corrupt: manifest\.json lists 16 records, its "
    r"TFRecord framing holds 15 \(record 15 is truncated",
    "count_plus5": r"shard {shard} is truncated or corrupt: manifest\.json lists 21 records, its "
    r"TFRecord framing holds 16; rebuild the records, or set input\.skip_corrupt: true",
    "count_minus5": r"shard {shard} holds 16 records \(counted from its TFRecord framing\) but "
    r"manifest\.json lists 11",
}


@pytest.fixture(params=FRAMING_CASES)
def framing_damage(request, base: Path, tmp_path: Path) -> tuple[str, Path]:
    """``(case, records)``: a copy of the records with one kind of framing damage."""
    records = tmp_path / "records"
    shutil.copytree(base, records)
    damage(records, request.param)
    return request.param, records


def test_library_names_framing_damage_at_load(framing_damage):
    import tfpipe.data as td

    case, records = framing_damage
    expected = FRAMING_ERRORS[case].format(shard=SHARD)
    with pytest.raises(RecordsError, match=expected):
        td.load(records, batch_size=4)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "flipped",
            r"shard {shard} is corrupt or truncated: reading it failed before the 16 records "
            r"that manifest\.json lists .*tfpipe inspect-records .*input\.skip_corrupt: true",
        ),
        (
            "bad_png",
            r"a tile in \S*/records does not decode \(TensorFlow: .*\): .*tfpipe build-records",
        ),
    ],
)
def test_train_prints_one_line_and_exits_with_2(outcomes, case, expected):
    outcome = outcomes[f"train/{case}"]
    assert not outcome.hung and outcome.returncode == 2, outcome.explain()
    assert "Traceback" not in outcome.stderr, outcome.explain()
    lines = [line for line in outcome.stderr.splitlines() if line and not _tensorflow_log(line)]
    assert len(lines) == 1 and lines[0].startswith("tfpipe train: error: "), outcome.explain()
    assert re.search(expected.format(shard=SHARD), lines[0]), outcome.explain()


def test_train_names_framing_damage_in_one_line_and_exits_with_2(
    framing_damage, tmp_path, monkeypatch, capsys
):
    from tfpipe.cli import main

    case, records = framing_damage
    use_tiny_model(monkeypatch)
    assert main(train_args(records, tmp_path)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfpipe train: error: "), lines
    assert re.search(FRAMING_ERRORS[case].format(shard=SHARD), lines[0]), lines
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def _tensorflow_log(line: str) -> bool:
    """TensorFlow's start-up lines, whatever the log level (e.g. ``E0000 ... cuInit``)."""
    return line.startswith("WARNING: All log messages before absl::InitializeLog()") or (
        re.match(r"[IWEF]\d{4} \d\d:\d\d:\d\d", line) is not None
    )


def test_reading_one_batch_and_leaving_exits(outcomes):
    outcome = outcomes["exit"]
    assert not outcome.hung and outcome.returncode == 0, outcome.explain()
    assert outcome.stdout.strip() == "read (4, 32, 32, 3)"


@pytest.mark.slow
@pytest.mark.timeout(10 * LIMIT_S + 120)  # 20 processes, two at a time
def test_reading_one_batch_and_leaving_exits_20_times(base):
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda _: run_python(ONE_BATCH, str(base)), range(20)))
    hung = [k for k, outcome in enumerate(runs) if outcome.hung]
    assert hung == [], runs[hung[0]].explain() if hung else ""
    for outcome in runs:
        assert outcome.returncode == 0 and outcome.stdout.strip() == "read (4, 32, 32, 3)", (
            outcome.explain()
        )


def test_the_damage_is_what_the_cases_say(base, tmp_path):
    # The cases test what they claim: a flipped data byte keeps the framing intact,
    # the bad PNG record passes its CRC and matches the manifest's size and sha256.
    from tfpipe.records.manifest import read_manifest
    from tfpipe.records.reader import count_frames

    for case in ("flipped", "bad_png"):
        records = tmp_path / case
        shutil.copytree(base, records)
        damage(records, case)
        assert count_frames(records / DAMAGED).records == PER_SHARD
        info = next(s for s in read_manifest(records).shards if s.path == DAMAGED)
        assert info.bytes == (records / DAMAGED).stat().st_size
        same_hash = hashlib.sha256((records / DAMAGED).read_bytes()).hexdigest() == info.sha256
        assert same_hash == (case == "bad_png")
    assert len(list(iter_records(records / DAMAGED))) == PER_SHARD  # the bad PNG passes its CRC


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Could not parse example input, value: 'tfpipe.data: shard /r/a b.tfrecord is "
            "corrupt or truncated: it has fewer than the 9 records that manifest.json lists'",
            "shard /r/a b.tfrecord is corrupt or truncated: reading it failed before the 9 "
            "records that manifest.json lists (a damaged record); `tfpipe inspect-records /r` "
            "checks every shard; rebuild the records, or set input.skip_corrupt: true to skip "
            "the damaged part",
        ),
        (
            "corrupted record at 1234 [Op:IteratorGetNext]",
            "a shard in /r is corrupt (corrupted record at 1234); `tfpipe inspect-records /r`",
        ),
        (
            "ParallelMapV2: Invalid PNG. Failed to initialize decoder.\n\t [[{{node DecodePng}}]]",
            "a tile in /r does not decode (TensorFlow: Invalid PNG. Failed to initialize "
            "decoder.): its record passed the CRC",
        ),
        (
            "jpeg::Uncompress failed. Invalid JPEG data or crop window. [Op:DecodeJpeg]",
            "a tile in /r does not decode (TensorFlow: jpeg::Uncompress failed. Invalid JPEG "
            "data or crop window.): ",
        ),
        ("Could not parse example input, value: 'xyz'", "a record in /r is not a tf.train"),
    ],
)
def test_damage_messages_become_one_line(message, expected):
    line = describe_damage(message, "/r")
    assert line is not None and line.startswith(expected) and "\n" not in line


def test_other_tensorflow_errors_keep_their_traceback():
    import tensorflow as tf

    assert describe_damage("Incompatible shapes: [4,32,32,1] vs. [4,32,32,2]", "/r") is None
    bug = tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [4,1] vs. [4,2]")
    with pytest.raises(tf.errors.InvalidArgumentError) as raised, damaged_records_as_errors("/r"):
        raise bug
    assert raised.value is bug
    with pytest.raises(ValueError, match="a bug"), damaged_records_as_errors("/r"):
        raise ValueError("a bug")
    damaged = tf.errors.InvalidArgumentError(None, None, "Invalid PNG. [Op:DecodePng]")
    with pytest.raises(RecordsError, match=r"^a tile in /r"), damaged_records_as_errors("/r"):
        raise damaged
