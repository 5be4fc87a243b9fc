"""build-records on Apache Beam (DirectRunner): the local build's shards and manifest, its errors.

The equality test runs the DirectRunner as a user gets it by default:
``multi_processing`` with ``data.workers`` (2) worker processes. The other
builds run ``in_memory`` (one process, no worker start-up) to stay quick.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

pytest.importorskip("apache_beam")

from apache_beam.options.pipeline_options import DirectOptions

from tests._records_helpers import data_config, make_dataset, write_rle_csv, write_tiff
from tfpipe import errors
from tfpipe.cli import main
from tfpipe.errors import ConfigError, InputDataError
from tfpipe.records.beam_options import pipeline_options, planned_workers
from tfpipe.records.beam_reports import raise_reported, reported
from tfpipe.records.build import build_records
from tfpipe.synthetic.datasets import make_demo_classification

SIZES = [(300, 260), (200, 330), (256, 256)]
IN_MEMORY = ["direct_running_mode=in_memory"]
# Fields that say when and how a build ran, not what it wrote.
RUN_FIELDS = ("created", "timings")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam")
    make_dataset(root, SIZES)
    return root


def _what_was_written(output: Path) -> dict:
    """The manifest without run facts (times, runner, output path), and every shard's bytes."""
    manifest = json.loads((output / "manifest.json").read_text())
    for key in RUN_FIELDS:
        manifest.pop(key)
    for stats in manifest["sources"].values():
        stats.pop("seconds")
    manifest["config"].pop("runner")
    manifest["config"].pop("output")
    shards = {s["path"]: (output / s["path"]).read_bytes() for s in manifest["shards"]}
    return {"manifest": manifest, "shards": shards}


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(name))


def test_beam_build_writes_the_local_builds_shards_and_manifest(source):
    local = build_records(
        data_config(source, output=source / "local", workers=2, encoding="png"), progress=False
    )
    beam_cfg = data_config(source, output=source / "beam", workers=2, encoding="png", runner="beam")
    beam = build_records(beam_cfg, progress=False)  # DirectRunner, multi_processing, 2 workers
    assert beam.config["runner"] == "beam" and beam.config["workers"] == 2
    assert set(beam.timings) == {"sources", "pipeline", "total"}
    assert len(local.shards) > 2 and local.num_records > 20
    ours, theirs = _what_was_written(source / "local"), _what_was_written(source / "beam")
    assert theirs["manifest"] == ours["manifest"]
    assert theirs["shards"] == ours["shards"]
    assert _leftovers(source, "beam") == ["beam"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("segmentation", dict(encoding="raw", compression="gzip", folds=3, stride=48)),
        ("classification", dict(encoding="jpeg", folds=2)),
    ],
)
def test_beam_equals_local_for_other_layouts(tmp_path, source, kind, changes):
    if kind == "classification":
        make_demo_classification(tmp_path / "data", n=40, size=96, seed=3)
        changes = dict(
            changes,
            source="classification",
            images=tmp_path / "data",
            labels=tmp_path / "data" / "labels.csv",
        )
    local = data_config(source, output=tmp_path / "local", workers=1, **changes)
    build_records(local, progress=False)
    beam = local.model_copy(update={"output": tmp_path / "beam", "runner": "beam"})
    build_records(beam, progress=False, beam_options=IN_MEMORY)
    assert _what_was_written(tmp_path / "beam") == _what_was_written(tmp_path / "local")


@pytest.mark.timeout(180)
def test_the_beam_path_never_imports_tensorflow(source, tmp_path):
    # The launcher and (in_memory) the workers' code run in this one process.
    code = textwrap.dedent(
        f"""
        import sys
        import tfpipe.records.beam, tfpipe.records.beam_stages
        from tests._records_helpers import data_config
        from tfpipe.records.build import build_records

        cfg = data_config(
            __import__("pathlib").Path({str(source)!r}), output={str(tmp_path / "out")!r},
            runner="beam",
        )
        manifest = build_records(cfg, progress=False, beam_options={IN_MEMORY!r})
        assert manifest.num_records > 0
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
        """
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], check=True, timeout=150, cwd=root)


def _truncate(path: Path, image) -> None:
    """A tiled, compressed TIFF missing its last 20 bytes: only its last tile cannot be read.

    So exactly one row band (one work unit) fails, and both builders meet the same first
    error whatever order their workers run in.
    """
    tifffile.imwrite(path, image, photometric="rgb", tile=(64, 64), compression="zlib")
    path.write_bytes(path.read_bytes()[:-20])


def _experiment(folder: Path, cfg) -> Path:
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump({"data": cfg.model_dump(mode="json")}))
    return path


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "mode", ["in_memory", pytest.param("multi_processing", marks=pytest.mark.slow)]
)
def test_a_truncated_slide_fails_the_beam_job_like_the_local_build(tmp_path, capfd, mode):
    slides = make_dataset(tmp_path, SIZES)
    _truncate(tmp_path / "train" / "slide1.tiff", slides["slide1"][0])
    cfg = data_config(tmp_path, output=tmp_path / "records", workers=2)
    with pytest.raises(InputDataError, match=r"window y=192 .* of \S*slide1\.tiff") as local:
        build_records(cfg, progress=False)
    capfd.readouterr()
    argv = ["build-records", str(_experiment(tmp_path, cfg)), "--runner", "beam"]
    # multi_processing: 2 worker processes, whose stderr is this process's (capfd sees it)
    assert main([*argv, "--beam-option", f"direct_running_mode={mode}"]) == 2
    err = capfd.readouterr().err
    assert err.endswith(f"tfpipe build-records: error: {local.value}\n")
    assert "Traceback" not in err
    assert _leftovers(tmp_path, "records") == []


def test_an_rle_off_the_slide_is_the_local_builds_error(source, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(source / "train", copy / "train")
    rles = {"slide0": "1 5", "slide1": f"{330 * 200 - 5} 10", "slide2": "1 5"}  # 5 px past
    write_rle_csv(copy / "train.csv", rles)
    cfg = data_config(copy)
    with pytest.raises(InputDataError) as local:
        build_records(cfg, progress=False)
    assert main(["build-records", str(_experiment(tmp_path, cfg)), "--runner", "beam"]) == 2
    assert capsys.readouterr().err == f"tfpipe build-records: error: {local.value}\n"
    assert "train.csv id=slide1" in str(local.value)
    assert _leftovers(copy, "records") == []


def _blank(source: Path, copy: Path, slide_ids: list[str]) -> None:
    """A copy of the dataset with ``slide_ids`` replaced by white slides."""
    shutil.copytree(source / "train", copy / "train")
    shutil.copy(source / "train.csv", copy / "train.csv")
    for sid, (h, w) in zip(["slide0", "slide1", "slide2"], SIZES, strict=True):
        if sid in slide_ids:
            write_tiff(copy / "train" / f"{sid}.tiff", np.full((h, w, 3), 255, np.uint8))


@pytest.mark.slow
def test_the_plan_steps_warnings_and_errors_reach_the_launcher(source, tmp_path):
    # Found by the plan step on a worker: a blank slide (a warning), every slide blank (an error).
    _blank(source, tmp_path / "one", ["slide1"])
    cfg = data_config(tmp_path / "one", runner="beam")
    with pytest.warns(UserWarning, match=r"slide slide1 came out blank: no tile has") as seen:
        build_records(cfg, progress=False, beam_options=IN_MEMORY)
    assert [str(w.message).split(":")[0] for w in seen] == ["slide slide1 came out blank"]
    _blank(source, tmp_path / "all", ["slide0", "slide1", "slide2"])
    cfg = data_config(tmp_path / "all", runner="beam")
    with pytest.raises(InputDataError, match=r"every slide in .* came out blank \(3 slide"):
        build_records(cfg, progress=False, beam_options=IN_MEMORY)
    assert _leftovers(tmp_path / "all", "records") == []


def test_yaml_runner_and_the_cli_flag_that_overrides_it(source, tmp_path):
    cfg = data_config(source, output=tmp_path / "records", runner="beam")
    experiment = _experiment(tmp_path, cfg)
    beam_opts = ["--beam-option", "direct_running_mode=in_memory"]
    assert main(["build-records", str(experiment), "--overwrite", *beam_opts]) == 0
    written = json.loads((tmp_path / "records" / "manifest.json").read_text())
    assert written["config"]["runner"] == "beam" and "pipeline" in written["timings"]
    assert main(["build-records", str(experiment), "--overwrite", "--runner", "local"]) == 0
    written = json.loads((tmp_path / "records" / "manifest.json").read_text())
    assert written["config"]["runner"] == "local" and "map" in written["timings"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--beam-option", "direct_num_workers=2"], "--beam-option needs data.runner: beam"),
        (["--runner", "beam", "--beam-option", "=2"], "--beam-option takes KEY=VALUE"),
        (
            ["--runner", "beam", "--beam-option", "direct_num_workers=two"],
            "--beam-option: argument --direct_num_workers: invalid int value: 'two'",
        ),
        (
            ["--runner", "beam", "--beam-option", "direct_num_worker=2"],
            "--beam-option direct_num_worker is not a Beam pipeline option",
        ),
        (["--runner", "cloud"], None),  # argparse: exit 2 before anything runs
    ],
)
def test_bad_beam_flags_are_one_line_errors(source, tmp_path, capsys, argv, message):
    experiment = _experiment(tmp_path, data_config(source, output=tmp_path / "records"))
    if message is None:
        with pytest.raises(SystemExit) as parsed:
            main(["build-records", str(experiment), *argv])
        assert parsed.value.code == 2
        return
    assert main(["build-records", str(experiment), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "records").exists()


def test_runner_beam_without_the_extra_names_it(source, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(errors.EXTRA_MODULES, "beam", ("tfpipe_test_absent_module",))
    experiment = _experiment(tmp_path, data_config(source, output=tmp_path / "records"))
    assert main(["build-records", str(experiment), "--runner", "beam"]) == 2
    assert capsys.readouterr().err == (
        "tfpipe build-records: error: data.runner: beam (--runner beam) needs the [beam] extra: "
        'pip install -e ".[beam]" in the tfpipe checkout; missing module(s) '
        "tfpipe_test_absent_module\n"
    )


def test_direct_runner_defaults_and_options_passed_through(source):
    defaults = pipeline_options(data_config(source, workers=3), [])
    direct = defaults.view_as(DirectOptions)
    assert (direct.direct_running_mode, direct.direct_num_workers) == ("multi_processing", 3)
    assert planned_workers(defaults, data_config(source, workers=3)) == 3
    mine = pipeline_options(data_config(source, workers=3), ["direct_num_workers=1"])
    assert mine.view_as(DirectOptions).direct_num_workers == 1
    flink = ["runner=FlinkRunner", "flink_master=localhost:8081", "num_workers=5", "x_custom=1"]
    options = pipeline_options(data_config(source, workers=3), flink)
    assert options.get_all_options(drop_default=True, retain_unknown_options=True) == {
        "runner": "FlinkRunner",
        "flink_master": "localhost:8081",
        "num_workers": 5,
        "x_custom": "1",
    }
    assert planned_workers(options, data_config(source)) == 5


def test_a_reported_full_disk_stays_a_full_disk(tmp_path):
    with pytest.raises(OSError), reported(tmp_path, "write-00001"):
        raise OSError(28, "No space left on device", "fold0-00000-of-00001.tfrecord")
    with pytest.raises(OSError) as again:
        raise_reported(tmp_path)
    assert again.value.errno == 28 and again.value.filename == "fold0-00000-of-00001.tfrecord"
    with pytest.raises(ConfigError), reported(tmp_path, "map-00000"):
        raise ConfigError("bad")
    with pytest.raises(ConfigError, match=r"^bad$"):
        raise_reported(tmp_path)  # map-00000 comes first
