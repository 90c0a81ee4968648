"""The command-line entry point itself."""

import os
import subprocess
import sys

import aeroseg
from aeroseg.cli import main


def test_presets_lists_one_line_each(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == aeroseg.presets()


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "presets" in capsys.readouterr().out


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "aeroseg", "presets"], capture_output=True, text=True)
    assert done.returncode == 0 and "aeroseg" in done.stdout


def test_a_reader_that_leaves_early_ends_every_verb_quietly():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as in a shell
    for argv in (["presets", "--verbose"], ["presets"], ["predict", "--help"]):
        done = subprocess.Popen(
            [sys.executable, "-m", "aeroseg", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        done.stdout.close()  # `aeroseg presets --verbose | head -1`: the reader is gone before the output
        assert done.wait() == 0, argv
        assert done.stderr.read() == b"", argv
