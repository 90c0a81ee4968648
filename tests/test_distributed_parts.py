"""The files a distributed prediction's workers write, without Ray: each unit of a scene (with its halo of
window rows) written as part files in any order, then the scene finished as a VRT over the parts or as one
GeoTIFF, equal one process: the same pixels, georeferencing, tags and colour map, and one GeoTIFF byte for
byte."""

import json

import pyogrio.raw
import pytest
import rasterio
import torch

from aeroseg.distributed.parts import Job, plan_scene, run_unit, unit_bands
from aeroseg.distributed.scenes import finish_scene
from aeroseg.prediction.classes import parse_classes
from aeroseg.prediction.outputs import PredictionFiles
from aeroseg.prediction.paths import output_paths
from aeroseg.prediction.streaming import WindowOptions, segment_source
from aeroseg.prediction.vector import VectorWriter
from aeroseg.raster import RasterSource, ReadOptions
from tests.test_inference import ContextModel, PixelModel
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff

CPU = torch.device("cpu")
SETTINGS = {"classes": ["a", "b", "d"], "window": 40}


def one_process(scene, paths, classes, options, cog, model=ContextModel):
    with RasterSource(scene, ReadOptions(nodata=0)) as source:
        files = PredictionFiles(source, classes, paths, collect=False, settings=SETTINGS, cog=cog)
        counts = segment_source(model(), source, classes, files, options=options, device=CPU)
        files.finish()
    return counts


def on_units(scene, paths, job, rows, order=reversed, model=ContextModel):
    """Plan the scene, run its units in ``order`` and finish it, as the workers of a cluster do."""
    with RasterSource(scene, job.read) as source:
        planned = plan_scene(
            scene, paths, source, job, unit_bands(source.height, source.width, job.options, rows)
        )
    counts = sum(run_unit(model(), planned, u, job, CPU) for u in order(range(len(planned.bands))))
    if not planned.whole:
        finish_scene(planned, job)
    return planned, counts


def same_raster(a_path, b_path, *, colours):
    with rasterio.open(a_path) as a, rasterio.open(b_path) as b:
        assert a.read().tobytes() == b.read().tobytes()
        assert (a.crs, a.transform, a.tags(), str(a.nodata), a.descriptions) == (
            b.crs, b.transform, b.tags(), str(b.nodata), b.descriptions
        )  # fmt: skip
        if colours:
            assert a.colormap(1) == b.colormap(1)


@pytest.mark.parametrize("cog", [True, False])
@pytest.mark.parametrize(
    "height,width,overlap,rows", [(230, 170, 0.25, 1), (97, 260, 0.6, 2), (30, 50, 0.25, 1)]
)
def test_units_written_by_workers_equal_one_process(tmp_path, height, width, overlap, rows, cog):
    image = smooth_image(height, width, seed=rows)
    image[:, : height // 3, : width // 3] = 0  # nodata: windows skipped, pixels 255
    scene = write_geotiff(tmp_path / "scene.tif", image)
    classes = parse_classes("a,b|c,d")
    options = WindowOptions(window=40, overlap=overlap, batch_size=3, stripe=70)
    one = output_paths(tmp_path / "one" / "scene.tif", scores=True, overlay=True)
    (tmp_path / "one").mkdir()
    expected = one_process(scene, one, classes, options, cog)
    job = Job(
        classes, ReadOptions(nodata=0), options, "fp32", rows, json.dumps(SETTINGS, sort_keys=True), cog
    )
    (tmp_path / "vrt").mkdir()
    vrt = output_paths(tmp_path / "vrt" / "scene.vrt", scores=True, overlay=True)
    planned, counts = on_units(scene, vrt, job, rows)
    assert counts.tolist() == expected.tolist()
    for kind in ("classes", "scores"):
        same_raster(one[kind], vrt[kind], colours=kind == "classes")
    assert vrt["overlay"].exists()
    assert planned.whole == (height < 40)  # a scene smaller than a unit: its worker writes its files
    if not planned.whole:
        assert sorted(p.name for p in planned.parts.iterdir()) == sorted(
            planned.part(u, kind).name for u in range(len(planned.bands)) for kind in ("classes", "scores")
        )  # the parts stay under the VRT, nothing else
    single = Job(**{**job.__dict__, "single": True})
    (tmp_path / "tif").mkdir()
    tif = output_paths(tmp_path / "tif" / "scene.tif", scores=True, overlay=False)
    planned, _ = on_units(scene, tif, single, rows, order=list)
    for kind in ("classes", "scores"):
        assert one[kind].read_bytes() == tif[kind].read_bytes()  # byte-identical, --no-cog included
    assert not planned.parts.exists()


def test_a_rerun_reuses_the_parts_written_with_the_same_settings(tmp_path):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(150, 90))
    options = WindowOptions(window=40, overlap=0.25, batch_size=3)
    job = Job(parse_classes("a,b"), ReadOptions(), options, "fp32", 1, json.dumps(SETTINGS))
    paths = {"classes": tmp_path / "scene.vrt"}
    with RasterSource(scene, job.read) as source:
        bands = unit_bands(source.height, source.width, options, 1)
        planned = plan_scene(scene, paths, source, job, bands)
        for unit in (0, 2):
            run_unit(ContextModel(), planned, unit, job, CPU)
        (planned.parts / ".rows_000000_000030.123-abcd.partial.tif").write_bytes(b"")  # a lost worker's
        again = plan_scene(scene, paths, source, job, bands)
        rows = [again.first_rows[u + 1] - again.first_rows[u] for u in (0, 2)]
        assert again.done == {0, 2} and again.counts.sum() == sum(rows) * 90
        other = plan_scene(scene, paths, source, Job(**{**job.__dict__, "settings": "{}"}), bands)
    assert other.done == set() and not any(planned.parts.iterdir())


@pytest.mark.parametrize("suffix", [".gpkg", ".parquet"])
def test_polygons_written_by_workers_equal_one_process(tmp_path, suffix):
    """Each scene's polygons are written by a worker (after its class raster, a VRT over parts here) and
    merged into the vector file, reprojected to the first scene's CRS, as one process writes them."""
    pytest.importorskip("pyarrow")
    classes = parse_classes("a,b|c,d")
    options = WindowOptions(window=40, overlap=0.25, batch_size=3)
    job = Job(classes, ReadOptions(), options, "fp32", 1, json.dumps(SETTINGS), polygons=(2.0, 0.3, False))
    one, merged = (
        VectorWriter(tmp_path / f"{n}{suffix}", min_area=2.0, simplify=0.3) for n in ("one", "ray")
    )
    for name, crs in (("a", "EPSG:32633"), ("b", "EPSG:32632")):
        scene = write_geotiff(tmp_path / f"{name}.tif", smooth_image(120, 90, seed=len(name)), crs=crs)
        (tmp_path / name).mkdir()
        paths = {"classes": tmp_path / name / "one.tif"}
        one_process(scene, paths, classes, options, cog=True, model=PixelModel)
        one.add(paths["classes"], source=scene)
        planned, _ = on_units(scene, {"classes": tmp_path / name / "ray.vrt"}, job, 1, model=PixelModel)
        assert not planned.whole
        merged.add_file(planned.polygons, tmp_path / name / "ray.vrt", source=scene)
    one.finish()
    merged.finish()
    assert one.count == merged.count > 3
    if suffix == ".parquet":
        import pyarrow.parquet

        a, b = (pyarrow.parquet.read_table(w.path) for w in (one, merged))
        assert a.schema.metadata == b.schema.metadata and a.to_pydict() == b.to_pydict()
        return
    a, b = pyogrio.raw.read(one.path), pyogrio.raw.read(merged.path)
    assert a[0]["crs"] == b[0]["crs"] and list(a[2]) == list(b[2])
    for x, y in zip(a[3], b[3], strict=True):
        assert list(x) == list(y)
