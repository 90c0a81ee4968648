"""The units of a distributed prediction without Ray: bands of window rows run apart, their seams blended,
give the single pass byte for byte, and every window runs once."""

import pytest
import torch

from aeroseg.prediction.classes import parse_classes
from aeroseg.prediction.outputs import ArrayWriter
from aeroseg.prediction.streaming import Grid, WindowOptions, blend_seam, segment_band, segment_source
from aeroseg.raster import ArraySource, ReadOptions
from tests.test_inference import ContextModel
from tests.test_predict import smooth_image


@pytest.mark.parametrize(
    "height,width,window,overlap,stripe",
    [(200, 333, 40, 0.25, 70), (97, 260, 32, 0.6, 40), (50, 30, 40, 0.25, 48)],
)
@pytest.mark.parametrize("rows", [1, 3])
def test_bands_and_seams_equal_the_single_pass(height, width, window, overlap, stripe, rows):
    image = smooth_image(height, width, seed=rows).transpose(1, 2, 0).copy()
    image[: height // 3, : width // 3] = 0  # nodata: windows skipped, pixels 255
    model, classes = ContextModel(), parse_classes("a,b|c,d")
    options = WindowOptions(window=window, overlap=overlap, batch_size=3, stripe=stripe)
    cpu = torch.device("cpu")
    whole, parts, runs = ArrayWriter(height, width), ArrayWriter(height, width), []
    with ArraySource(image, ReadOptions(nodata=0)) as source:
        segment_source(model, source, classes, whole, options=options, device=cpu)
        grid = Grid(height, width, options)
        bands, edges = grid.bands(rows), []
        for band in reversed(bands):  # in any order, as on a cluster
            _, edge = segment_band(
                model, source, classes, parts, grid, band, options=options, device=cpu, on_windows=runs.append
            )
            edges.insert(0, edge)
        for j in range(1, len(bands)):
            blend_seam(grid, classes, parts, bands[j][0], edges[j - 1], edges[j])
    assert whole.ids.tobytes() == parts.ids.tobytes()
    assert whole.confidence.tobytes() == parts.confidence.tobytes()
    assert sum(runs) == len(grid.ys) * len(grid.xs)
    assert (whole.ids[: height // 3, : width // 3] == 255).all()


def test_workers_of_an_earlier_ray_session_are_not_reused(monkeypatch):
    """A rerun in the same process after ray.shutdown() and ray.init(): the job id repeats, the handles of
    the first session's workers are no longer valid (ActorHandleNotFoundError), so they are neither reused
    nor killed."""
    runner = pytest.importorskip("aeroseg.distributed.runner")
    session = ["01000000", "node-a"]
    monkeypatch.setattr(runner, "_session", lambda: tuple(session))

    class Pool:
        def __init__(self, model, cluster, key):
            self.key, self.session = key, runner._session()

        def close(self):
            raise AssertionError("killed a worker of an ended session")

    monkeypatch.setattr(runner, "_Pool", Pool)
    monkeypatch.setattr(runner, "_POOLS", {})
    first = runner._pool({"checkpoint": "c"}, runner.Cluster())
    assert runner._pool({"checkpoint": "c"}, runner.Cluster()) is first
    session[1] = "node-b"  # a new cluster numbers its jobs from 1 again
    second = runner._pool({"checkpoint": "c"}, runner.Cluster())
    assert second is not first and list(runner._POOLS.values()) == [second]
