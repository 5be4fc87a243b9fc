"""The command line: help texts, and user errors as one message with exit status 2."""

import pytest

from tfpipe.cli import COMMANDS, build_parser, main


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
