"""``aeroseg predict --ray local`` stopped mid-run by SIGTERM (what ``kill``, ``timeout`` and batch
schedulers send) or SIGKILL: with SIGTERM the command ends as one process does ("interrupted", no stack
lines) and Ray's own messages are not in the log; either way the local Ray cluster it started is gone
with it (after SIGKILL: stopped by the reaper), and a rerun ends with the outputs of one process. Runs
the CLI in a child process (its own Ray cluster), so no cluster is started for the module."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.tiny import build_tiny_model
from tests.test_distributed import CLASSES, assert_same_outputs
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff

pytest.importorskip("ray")

# 143 once the CLI turns SIGTERM into errors.Terminated; before, SIGTERM ends the run as Ctrl+C does


def descendants(pid):
    """The processes below ``pid`` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_stops_the_run_and_its_local_cluster_and_a_rerun_finishes_it(tmp_path, sig):
    checkpoint = tmp_path / "tiny"
    build_tiny_model().save_pretrained(checkpoint)
    scene = write_geotiff(tmp_path / "big.tif", smooth_image(700, 300, seed=5))
    common = [
        scene,
        "--checkpoint",
        str(checkpoint),
        "--classes",
        CLASSES,
        "--window",
        "64",
        "--batch-size",
        "2",
    ]
    common += ["--scores"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    ray_run = [
        sys.executable,
        "-m",
        "aeroseg",
        "predict",
        *common,
        "-o",
        str(tmp_path / "ray"),
        "--ray",
        "local",
    ]
    ray_run += ["--ray-threads", "1", "--ray-unit-rows", "1"]
    child = subprocess.Popen(ray_run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, cluster = time.time() + 300, []
    while time.time() < deadline and not list(tmp_path.glob("ray/big.parts/rows_*.json")):
        cluster = descendants(child.pid) or cluster
        time.sleep(0.2)
    assert cluster, "the run never got under way"
    child.send_signal(sig)
    out, err = child.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert child.returncode == 143, err  # 128 + SIGTERM, as one process
        assert err.strip().splitlines()[-1] == "aeroseg predict: interrupted"
        for noise in (
            "Traceback",
            "SIGABRT",
            "\x1b[",
            "Token authentication",
            "Started a local Ray",
            "raylet",
        ):
            assert noise not in err + out
    else:
        assert child.returncode == -signal.SIGKILL
    deadline = time.time() + 30
    while time.time() < deadline and any(alive(pid) for pid in cluster):
        time.sleep(0.5)
    assert not [pid for pid in cluster if alive(pid)], "processes of the local cluster outlived the run"
    assert not (tmp_path / "ray" / "big.vrt").exists()
    rerun = subprocess.run(ray_run, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "0 reused" not in rerun.stderr  # the parts written before the signal were kept
    one = subprocess.run(
        [sys.executable, "-m", "aeroseg", "predict", *common, "-o", str(tmp_path / "one"), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert_same_outputs(tmp_path / "one", tmp_path / "ray", ["big"])
