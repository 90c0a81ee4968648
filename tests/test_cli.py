"""The command-line entry point itself."""

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
