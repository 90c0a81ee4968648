"""The README's examples run, offline, on tiny models, so that they cannot drift from the code.

Every ```python and ```bash block of README.md carries a marker on the line before it:
``<!-- readme-check: run -->`` (run here) or ``<!-- readme-check: skip: WHY -->`` (needs network, data or
paper-size weights). A block with neither fails :func:`test_every_code_block_is_marked`, so a section added
later is never silently left out. Run blocks see a working directory holding the files the README names
(``scene.tif``, ``city.tif``, ``tiles/``, ``runs/isaid/final``, ``runs/isaid-aeroseg/final``) and a Hugging
Face cache in which the hub ids the README names hold tiny random models in the real formats.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aeroseg.cli import main
from tests.helpers.tiny import build_tiny_model
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"^<!-- readme-check: (run|skip: .+) -->$")
CODE = ("python", "bash", "sh", "shell", "console")
HUB_IDS = {  # hub id in the README -> tiny backbone standing in for it
    "openai/clip-vit-base-patch16": "clip",
    "facebook/sam-vit-large": "sam",
    "facebook/sam-vit-base": "sam",
}


def code_blocks(text: str) -> list[tuple[int, str, str | None, str]]:
    """(line number, language, marker or None, code) of every fenced block of ``text``."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before.strip())
        blocks.append(
            (i + 1, fence.group(1), marker.group(1) if marker else None, "\n".join(lines[i + 1 : end]))
        )
        i = end + 1
    return blocks


def checked(language: tuple[str, ...]) -> list[tuple[int, str]]:
    return [
        (n, code)
        for n, lang, mark, code in code_blocks(README.read_text())
        if lang in language and mark == "run"
    ]


def test_every_code_block_is_marked():
    unmarked = [n for n, lang, mark, _ in code_blocks(README.read_text()) if lang in CODE and mark is None]
    assert not unmarked, (
        f"README.md code blocks at lines {unmarked} have no '<!-- readme-check: run -->' (run offline by "
        "tests/test_readme.py) or '<!-- readme-check: skip: WHY -->' line before them"
    )
    assert checked(("python",)) and checked(("bash",))  # the set of checked blocks never silently empties


def test_markers_are_read():
    text = "<!-- readme-check: run -->\n```python\nx = 1\n```\n\n```bash\nls\n```\n```\nplain\n```\n"
    assert [(lang, mark) for _, lang, mark, _ in code_blocks(text)] == [
        ("python", "run"),
        ("bash", None),
        ("", None),
    ]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_backbones):
    """The files and the (fake, offline) hub the README's examples name."""
    root = tmp_path_factory.mktemp("readme")
    for name in ("scene.tif", "city.tif"):
        write_geotiff(root / name, smooth_image(96, 80, seed=len(name)))
    (root / "tiles").mkdir()
    for i in range(2):
        write_geotiff(root / "tiles" / f"tile_{i}.tif", smooth_image(64, 64, seed=10 + i))
    model = build_tiny_model()
    for run in ("runs/isaid/final", "runs/isaid-aeroseg/final"):
        model.save_pretrained(root / run)
    cache = root / "hub"
    for repo, kind in HUB_IDS.items():
        snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
        shutil.copytree(tiny_backbones[kind], snapshot)
        (snapshot.parent.parent / "refs").mkdir()
        (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    return root


def test_python_blocks_run(workdir):
    script = "\n\n".join(code for _, code in checked(("python",)))
    env = dict(os.environ, HF_HUB_CACHE=str(workdir / "hub"), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(README.parent / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (workdir / "out" / "scene.tif").is_file() and (
        workdir / "my-model" / "model.safetensors"
    ).is_file()


def commands(code: str) -> list[list[str]]:
    """The command lines of a shell block (continuations joined, comments dropped), split into words."""
    return [
        shlex.split(line, comments=True) for line in code.replace("\\\n", " ").splitlines() if line.strip()
    ]


@pytest.mark.parametrize(("line", "code"), checked(("bash",)))
def test_command_blocks_run(workdir, monkeypatch, line, code):
    monkeypatch.chdir(workdir)
    for argv in commands(code):
        assert argv[0] == "aeroseg", f"README.md line {line}: only aeroseg commands run here; mark it skip"
        assert main(argv[1:] + ["--quiet"] * ("--quiet" not in argv)) == 0, f"README.md line {line}: {argv}"
