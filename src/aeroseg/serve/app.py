"""The web application of ``aeroseg serve``: the page, raster and class tiles, segmentation runs, downloads.

Every request passes :class:`aeroseg.serve.security.GuardMiddleware` first (token, Host, origin, content
type). Every error reaches the page as JSON ``{"error": "<one line>"}`` with a 4xx status (401 without the
token, 403 outside the allowed folders or a foreign origin, 404 unknown ids, 413 over a limit, 429 a full
queue, 400 anything else the user can fix); an unexpected failure answers 500 with one line, never a
stack trace.

Routes (JSON unless said otherwise; every /api/ route needs the token):
    GET    /                                    the page (static files, no CDN)
    GET    /api/state                           files under the roots, open rasters, models, limits
    POST   /api/open          {path}            open an image → its map frame
    POST   /api/upload?filename=NAME  (raw body, application/octet-stream)  upload → its map frame
    GET    /api/rasters/{id}/tiles/{z}/{x}/{y}.png     image tiles (RGBA PNG)
    POST   /api/segment       {raster, classes, background_threshold, scope, bounds, model} → a run
    GET    /api/jobs/{id}                       progress, then classes, colours and pixel counts
    DELETE /api/jobs/{id}                       stop the run at its next window, delete its files
    GET    /api/jobs/{id}/tiles/{z}/{x}/{y}.png?hide=1,2   class tiles (RGBA PNG)
    GET  /api/jobs/{id}/classes.tif             class Cloud-Optimized GeoTIFF (the input's CRS and pixel grid)
    GET  /api/jobs/{id}/polygons.{gpkg,geojson,parquet}   polygons (GeoPackage, GeoJSON, GeoParquet; input CRS)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from rasterio.errors import RasterioError
from rasterio.windows import Window
from rio_tiler.errors import RioTilerError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from aeroseg.errors import UserError
from aeroseg.prediction.classes import parse_classes
from aeroseg.prediction.outputs import class_colours
from aeroseg.raster import one_line
from aeroseg.serve.catalog import DEFAULT_MODEL, Catalog, Raster
from aeroseg.serve.files import ForbiddenPath, save_upload, too_large
from aeroseg.serve.jobs import VECTOR_FORMATS, JobRunner
from aeroseg.serve.limits import Busy, Limits, TooLarge, tile_pixels
from aeroseg.serve.security import Guard, GuardMiddleware, Refused
from aeroseg.serve.tiles import (
    MapFrame,
    check_tile_address,
    colour_table,
    empty_png,
    png,
    read_tile,
    view_window,
)

PNG = "image/png"


class OpenRequest(BaseModel):
    path: str


class SegmentRequest(BaseModel):
    raster: str
    classes: str
    background_threshold: float | None = None
    scope: str = "view"  # "view" (needs bounds) or "image"
    bounds: tuple[float, float, float, float] | None = None  # south, west, north, east (map units)
    model: str = DEFAULT_MODEL


def create_app(
    catalog: Catalog,
    runner: JobRunner,
    *,
    guard: Guard,
    limits: Limits,
    model_label: str,
    presets: Sequence[str],
) -> FastAPI:
    """The FastAPI application over an open :class:`Catalog` and :class:`JobRunner`, behind ``guard``;
    ``presets`` are the preset models the page may ask for."""
    app = FastAPI(title="aeroseg serve", docs_url=None, redoc_url=None, openapi_url=None)
    static = resources.files("aeroseg.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.add_middleware(GuardMiddleware, guard=guard, json_bytes=limits.json_bytes)
    _error_handlers(app)
    app.state.catalog, app.state.runner, app.state.guard = catalog, runner, guard  # for tests, benchmarks

    def cheap(z: int, frame: MapFrame, width: int, height: int, overviews: Sequence[int]) -> bool:
        """Whether a tile at zoom ``z`` reads at most the tile limit (else it is served empty)."""
        cost = tile_pixels(z, native_zoom=frame.native_zoom, width=width, height=height, overviews=overviews)
        return cost <= limits.tile_pixels

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return {
            "files": catalog.access.listing(),
            "rasters": [r.info() for r in catalog.rasters()],
            "model": model_label,
            "precision": runner.precision,  # the one used (--precision auto resolved)
            "presets": list(presets),
            "max_upload_mb": limits.upload_bytes / 2**20,
            "encodings": runner.encodings,  # windows encoded since start: a new class list adds none
        }

    @app.post("/api/open")
    def open_raster(request: OpenRequest) -> dict[str, Any]:
        return catalog.open(request.path).info()

    @app.post("/api/upload")
    async def upload(request: Request, filename: str) -> dict[str, Any]:
        declared = int(request.headers["content-length"])  # the guard refuses a POST without it
        if declared > limits.upload_bytes:
            raise too_large(filename, limits.upload_bytes)
        with catalog.upload_room(declared):
            path = await save_upload(
                filename, request.stream(), catalog.access.upload_dir, max_bytes=declared
            )
            try:
                raster = await run_in_threadpool(catalog.open, path, upload_bytes=max(1, declared))
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        return raster.info()

    @app.get("/api/rasters/{raster_id}/tiles/{z}/{x}/{y}.png")
    def raster_tile(raster_id: str, z: int, x: int, y: int) -> Response:
        raster = _found(lambda: catalog.raster(raster_id))
        frame, source = raster.frame, raster.source
        check_tile_address(z, x, y, georeferenced=frame.georeferenced)
        if not cheap(z, frame, source.width, source.height, frame.overviews):
            return Response(empty_png(), media_type=PNG)
        bands = list(dict.fromkeys(source.bands))
        tile = read_tile(str(raster.path), raster.driver, x, y, z, bands, georeferenced=frame.georeferenced)
        if tile is None:
            return Response(empty_png(), media_type=PNG)
        values, valid = tile
        rgb = source.to_unit(values[[bands.index(b) for b in source.bands]])  # (3, 256, 256) in [0, 1]
        rgb = (rgb * 255).round().astype(np.uint8).transpose(1, 2, 0)
        return Response(png(rgb, valid), media_type=PNG)

    @app.post("/api/segment")
    def segment(request: SegmentRequest) -> dict[str, Any]:
        raster = catalog.hold(request.raster)
        try:
            window = _window(request, raster)
            limits.check_job(int(window.width), int(window.height))
            classes = parse_classes(request.classes, background_threshold=request.background_threshold)
            model = catalog.model(request.model)
            cache = catalog.cache(request.model, raster.id)
            job = runner.submit(
                model, cache, raster, classes, window, release=lambda: catalog.release(raster)
            )
        except BaseException:
            catalog.release(raster)
            raise
        return job.info()

    @app.get("/api/jobs/{job_id}")
    def job_state(job_id: str) -> dict[str, Any]:
        return _found(lambda: runner.job(job_id)).info()

    @app.delete("/api/jobs/{job_id}")
    def cancel_job(job_id: str) -> dict[str, Any]:
        return _found(lambda: runner.cancel(job_id)).info()

    @app.get("/api/jobs/{job_id}/tiles/{z}/{x}/{y}.png")
    def class_tile(job_id: str, z: int, x: int, y: int, hide: str = "") -> Response:
        job = _finished(runner, job_id)
        frame, window = job.raster.frame, job.window
        check_tile_address(z, x, y, georeferenced=frame.georeferenced)
        if not cheap(z, frame, int(window.width), int(window.height), job.overviews):
            return Response(empty_png(), media_type=PNG)
        tile = read_tile(
            str(job.class_path), "GTiff", x, y, z, [1], georeferenced=frame.georeferenced,
            resampling="nearest", offset=(int(window.col_off), int(window.row_off)),
        )  # fmt: skip
        if tile is None:
            return Response(empty_png(), media_type=PNG)
        hidden = {int(h) for h in re.findall(r"[0-9]{1,3}", hide[:1024])}
        table = colour_table(class_colours(job.classes.ids_to_names), hidden)
        rgba = table[tile[0][0].astype(np.uint8)]  # (256, 256, 4)
        rgba[..., 3] *= tile[1]
        return Response(png(rgba[..., :3], rgba[..., 3]), media_type=PNG)

    @app.get("/api/jobs/{job_id}/classes.tif")
    def class_geotiff(job_id: str) -> FileResponse:
        job = _finished(runner, job_id)
        return FileResponse(job.class_path, media_type="image/tiff", filename=job.class_path.name)

    @app.get("/api/jobs/{job_id}/polygons.{kind}")
    def polygons(job_id: str, kind: str) -> FileResponse:
        job = _finished(runner, job_id)
        if kind not in VECTOR_FORMATS:
            raise _NotFound(f"polygons come as {', '.join(f'polygons.{k}' for k in VECTOR_FORMATS)}")
        path = runner.polygons(job, kind)
        return FileResponse(path, media_type=VECTOR_FORMATS[kind], filename=path.name)

    return app


def _window(request: SegmentRequest, raster: Raster) -> Window:
    """The pixel window of the request's scope: the whole raster, or the view's bounds on it."""
    source = raster.source
    if request.scope == "image":
        return Window(0, 0, source.width, source.height)
    if request.scope != "view":
        raise UserError(f"scope must be 'view' or 'image', got {request.scope[:40]!r}")
    if request.bounds is None:
        raise UserError("segmenting the view needs its bounds")
    return view_window(
        request.bounds, frame=raster.frame, crs=source.crs, transform=source.transform,
        size=(source.height, source.width),
    )  # fmt: skip


class _NotFound(UserError):
    pass


def _found(get):
    try:
        return get()
    except UserError as error:
        raise _NotFound(str(error)) from None


def _finished(runner: JobRunner, job_id: str):
    job = _found(lambda: runner.job(job_id))
    if job.status != "done":
        raise _NotFound(f"segmentation {job_id} is {job.status}" + (f": {job.error}" if job.error else ""))
    return job


def _error_handlers(app: FastAPI) -> None:
    def answer(status: int):
        return lambda request, error: JSONResponse({"error": str(error)}, status_code=status)

    app.add_exception_handler(ForbiddenPath, answer(403))
    app.add_exception_handler(Refused, answer(403))
    app.add_exception_handler(TooLarge, answer(413))
    app.add_exception_handler(Busy, answer(429))
    app.add_exception_handler(_NotFound, answer(404))
    app.add_exception_handler(UserError, answer(400))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(
            {"error": f"bad request: {where}: {first.get('msg', 'invalid')}"}, status_code=422
        )

    @app.exception_handler(HTTPException)
    def http(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RasterioError)
    @app.exception_handler(RioTilerError)
    def raster_error(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"cannot read the image: {one_line(error)}"}, status_code=400)

    @app.exception_handler(Exception)
    def unexpected(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {one_line(error)}"}, status_code=500)
