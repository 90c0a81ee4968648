"""GeoParquet polygons (``--vector FILE.parquet``) read back with geopandas: the CRS, the class names, the
same polygons as the GeoPackage output; several images and CRSs; pixel coordinates; the Python API and
serve's download; the missing extra."""

from __future__ import annotations

import json
import sys

import geopandas
import numpy as np
import pyarrow.parquet
import pyogrio
import pytest
import shapely
from rasterio.warp import transform

import aeroseg
from aeroseg.cli import main
from aeroseg.errors import UserError
from aeroseg.prediction.vector import VectorWriter
from tests.test_inference import PixelModel
from tests.test_predict import smooth_image
from tests.test_predict_inputs import TRANSFORM, write_geotiff

CLASSES = ["tree", "building", "sand"]


def predict(inputs, out, *extra):
    argv = ["predict", *inputs, "--classes", ",".join(CLASSES), "-o", str(out), "--window", "32"]
    return main([*argv, "--quiet", *extra])


def read_gpkg(path):
    meta = pyogrio.read_info(path)
    _, _, geometry, fields = pyogrio.raw.read(path, columns=["class", "class_id", "area", "source"])
    return meta, shapely.from_wkb(geometry), fields


def test_geoparquet_equals_the_geopackage(tmp_path, standin):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(96, 112))
    assert predict([scene], tmp_path / "a", "--vector", str(tmp_path / "p.parquet")) == 0
    assert predict([scene], tmp_path / "b", "--vector", str(tmp_path / "p.gpkg")) == 0
    frame = geopandas.read_parquet(tmp_path / "p.parquet")
    meta, geometry, (names, ids, areas, sources) = read_gpkg(tmp_path / "p.gpkg")
    assert frame.crs == "EPSG:32633" and meta["crs"] == "EPSG:32633"
    assert list(frame.columns) == ["class", "class_id", "area", "source", "geometry"]
    assert len(frame) == meta["features"] == len(geometry) > 3
    assert set(frame["class"]) <= set(CLASSES) and frame["class"].tolist() == names.tolist()
    assert frame["class_id"].tolist() == ids.tolist() and frame["source"].tolist() == sources.tolist()
    np.testing.assert_allclose(frame["area"], areas)
    assert all(a.equals(b) for a, b in zip(frame.geometry, geometry, strict=True))
    np.testing.assert_allclose(frame.geometry.area, frame["area"])  # area measured before simplification
    geo = json.loads(pyarrow.parquet.read_schema(tmp_path / "p.parquet").metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["encoding"] == "WKB" and geo["columns"]["geometry"][
        "geometry_types"
    ] == ["Polygon"]


def test_images_in_two_crs_go_into_the_first_ones(tmp_path, standin):
    first = write_geotiff(tmp_path / "utm.tif", smooth_image(64, 64, seed=1))
    second = write_geotiff(tmp_path / "other.tif", smooth_image(64, 64, seed=2), crs="EPSG:32632")
    vector = tmp_path / "both.parquet"
    assert predict([first, second], tmp_path / "out", "--vector", str(vector), "--min-area", "2") == 0
    frame = geopandas.read_parquet(vector)
    assert frame.crs == "EPSG:32633" and set(frame["source"]) == {first, second}
    assert (frame["area"] >= 2).all()
    west, _, _, north = frame[frame["source"] == second].total_bounds
    (x,), (y,) = transform("EPSG:32632", "EPSG:32633", [TRANSFORM.c], [TRANSFORM.f])  # its corner
    assert west == pytest.approx(x, abs=8) and north == pytest.approx(y, abs=8)  # the grids turn by 4.6°
    single = tmp_path / "single.parquet"
    assert predict([first], tmp_path / "one", "--vector", str(single), "--min-area", "2") == 0
    assert len(geopandas.read_parquet(single)) == (frame["source"] == first).sum()


def test_pixel_coordinates_have_no_crs_and_say_so(tmp_path):
    writer = VectorWriter(tmp_path / "pixels.parquet", pixel_coordinates=True)
    result = aeroseg.predict(
        PixelModel().eval(), smooth_image(48, 48), CLASSES, tmp_path / "x.tif", window=32
    )
    writer.add(result.outputs["classes"], source="<array>")
    writer.finish()
    frame = geopandas.read_parquet(tmp_path / "pixels.parquet")
    assert frame.crs is None and len(frame) == writer.count > 0
    assert frame.total_bounds.tolist() == [0, 0, 48, 48]  # (column, row)
    schema = pyarrow.parquet.read_schema(tmp_path / "pixels.parquet").metadata
    assert json.loads(schema[b"geo"])["columns"]["geometry"]["crs"] is None  # null: no CRS (absent: CRS84)
    assert "pixel coordinates" in json.loads(schema[b"aeroseg"])["description"]


def test_empty_output_and_the_python_api(tmp_path):
    empty = VectorWriter(tmp_path / "empty.parquet")
    empty.finish()
    assert len(geopandas.read_parquet(tmp_path / "empty.parquet")) == 0
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(64, 80))
    vector = tmp_path / "api" / "polygons.parquet"
    result = aeroseg.predict(PixelModel().eval(), scene, CLASSES, tmp_path / "api", window=32, vector=vector)
    assert result.outputs["vector"] == vector and geopandas.read_parquet(vector).crs == "EPSG:32633"
    assert sorted(p.name for p in vector.parent.iterdir()) == [
        "polygons.parquet",
        "scene.tif",
    ]  # no temporaries


def test_missing_pyarrow_is_named(tmp_path, monkeypatch, capsys, standin):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(
        UserError, match=r'GeoParquet output \(--vector FILE.parquet\) needs pyarrow.*"aeroseg\[geo\]"'
    ):
        VectorWriter(tmp_path / "x.parquet")
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(32, 32))
    assert predict([scene], tmp_path / "out", "--vector", str(tmp_path / "x.parquet")) == 2
    err = capsys.readouterr().err.strip()
    assert 'pip install "aeroseg[geo]"' in err and len(err.splitlines()) == 1
    assert predict([scene], tmp_path / "out", "--vector", str(tmp_path / "x.shp")) == 2
    assert "or .parquet" in capsys.readouterr().err


def test_serve_downloads_geoparquet_and_geojson(tmp_path):
    pytest.importorskip("fastapi")
    from tests.helpers.tiny import build_tiny_model
    from tests.test_serve import authorised, download, run, serve

    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(64, 96))
    checkpoint = tmp_path / "tiny"
    build_tiny_model().save_pretrained(checkpoint)
    with serve(scene, "--checkpoint", str(checkpoint), "--window", "64") as (app, _):
        client = authorised(app)
        job = run(client, raster=client.get("/api/state").json()["rasters"][0]["id"], scope="image")
        paths = {
            kind: download(client, job, tmp_path, f"polygons.{kind}")
            for kind in ("gpkg", "geojson", "parquet")
        }
        response = client.get(f"/api/jobs/{job['id']}/polygons.shp")
        assert response.status_code == 404 and "polygons.parquet" in response.json()["error"]
    frames = {
        kind: geopandas.read_parquet(p) if kind == "parquet" else geopandas.read_file(p)
        for kind, p in paths.items()
    }
    assert {len(f) for f in frames.values()} == {len(frames["gpkg"])} and len(frames["gpkg"]) > 0
    assert frames["parquet"].crs == frames["gpkg"].crs == "EPSG:32633"
    assert frames["parquet"]["class"].tolist() == frames["gpkg"]["class"].tolist()
