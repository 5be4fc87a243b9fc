"""The command line: help texts, and user errors as one message with exit status 2."""

import argparse
import os
import subprocess
import sys

import pytest

from tfpipe.cli import COMMANDS, build_parser, common, main, model_commands
from tfpipe.cli.common import CPU_HOST_NOISE, filtered_stderr


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([name, "--help"])
        assert done.value.code == 0
        assert "usage: tfpipe " + name in capsys.readouterr().out


def test_config_error_is_a_message_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "x.yaml"
    bad.write_text("data:\n  tile_size: 500\n")
    code = main(["build-records", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert "tile_size must be a multiple of 32" in err
    assert "Traceback" not in err


def subparser(name):
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


@pytest.mark.parametrize("name", list(model_commands.COMMANDS))
def test_model_commands_describe_themselves_and_every_option(name):
    p = subparser(name)
    assert p.description and len(p.description) > 40
    undocumented = [a.dest for a in p._actions if not a.help]
    assert undocumented == []


def test_predict_help_shows_a_predict_setting_as_its_example():
    text = subparser("predict").format_help()
    assert "--set predict.threshold=0.4" in text and "train.epochs" not in text


def test_filtered_stderr_drops_gpu_probe_noise_and_keeps_the_rest(capfd):
    noise = b"E0000 00:00:1 123 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
    with filtered_stderr(CPU_HOST_NOISE):
        os.write(2, noise)
        os.write(2, b"E0000 real trouble: out of memory\n")
        os.write(2, noise)
    assert capfd.readouterr().err == "E0000 real trouble: out of memory\n"


def test_gpu_hosts_are_left_alone(monkeypatch):
    captured = []
    monkeypatch.setattr(common, "filtered_stderr", lambda drop: captured.append(drop))
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setattr(common, "has_gpu_device", lambda: True)
    common.import_tensorflow_quietly()
    assert captured == [] and "tensorflow" not in sys.modules


@pytest.mark.slow
@pytest.mark.timeout(660)  # above the subprocess's own limit
@pytest.mark.skipif(common.has_gpu_device(), reason="checks a CPU-only host")
def test_cli_error_on_a_cpu_host_is_one_line_without_cuda_noise(tmp_path):
    from tests._train_helpers import write_records

    records = write_records(tmp_path / "rec", folds=2, per_fold=4)
    yaml_path = tmp_path / "x.yaml"
    yaml_path.write_text(f"data:\n  output: {records}\ntrain:\n  runs_dir: {tmp_path / 'runs'}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES",)}
    done = subprocess.run(
        [sys.executable, "-m", "tfpipe.cli", "train", str(yaml_path), "--fold", "9"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tfpipe train: error: fold 9 does not exist: the records have folds [0, 1]; got --fold=[9]"
    ]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
