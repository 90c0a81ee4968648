"""``aeroseg demo``: the training-free model on a public aerial image; no training, no data set, no key.

    aeroseg demo                                   # sample image, default classes, outputs in aeroseg-demo/
    aeroseg demo --image scene.tif --classes "building,road,tree|forest,water" -o out

On first use the public CLIP ViT-B/16 and SAM ViT-B weights are downloaded into the Hugging Face cache,
and a window of the sample scene (an OpenAerialMap Cloud-Optimized GeoTIFF, read by HTTP range requests)
into the aeroseg cache (``$AEROSEG_CACHE``, else ``$XDG_CACHE_HOME/aeroseg`` or ``~/.cache/aeroseg``).
Writes ``<stem>.tif`` (class ids, georeferenced) and ``<stem>_overlay.png`` (the image with the classes
and a legend), both recording the settings that made them as ``aeroseg predict`` does (``AEROSEG_SETTINGS``:
a later ``aeroseg predict`` with the same settings takes them as finished). Without network access it says
in one line what to download or pass, and exits with 2.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from aeroseg import registry
from aeroseg.atomic import atomic
from aeroseg.cli import options
from aeroseg.device import resolve_device
from aeroseg.errors import UserError
from aeroseg.hub import cache_dir


@dataclass(frozen=True)
class Sample:
    """A square window at the centre of a remote scene, read decimated and cached as a small GeoTIFF."""

    url: str  # a (Cloud-Optimized) GeoTIFF served over HTTP(S)
    side: int  # side of the cached image, in pixels
    decimation: int  # source pixels per cached pixel (the COG's overviews serve the decimated read)
    stem: str  # name of the cached file and of the outputs


# OpenAerialMap (HOT OSM imagery bucket), Dominica, 2018: 19836×11666 RGB uint8 COG at ~4.4 cm with
# overviews 2–64; the example scene of rio-tiler's and TiTiler's documentation. Cached at 8× decimation
# (~35 cm per pixel, a 360 m square), close to the resolution of iSAID and OpenEarthMap.
SAMPLE = Sample(
    url="https://oin-hotosm.s3.amazonaws.com/5a95f32c2553e6000ce5ad2e/0/10edab38-1bdd-4c06-b83d-6e10ac532b7d.tif",
    side=1024,
    decimation=8,
    stem="oam-dominica",
)
DEFAULT_CLASSES = "building|roof,road,tree,grass|low vegetation,bare soil,water,car|vehicle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image", metavar="FILE|URL", help="image to segment instead of the sample scene (any size)"
    )
    parser.add_argument(
        "--classes",
        default=DEFAULT_CLASSES,
        help=f'comma-separated classes, "a|b" synonyms (default: {DEFAULT_CLASSES})',
    )
    parser.add_argument("-o", "--output", default="aeroseg-demo", metavar="DIR", help="output folder")
    options.add_model(
        parser.add_argument_group("model (one that needs no training)"),
        default_preset=registry.DEFAULT_SEGMENTER,
        checkpoint=False,
    )
    parser.add_argument(
        "--window",
        type=int,
        default=1024,
        help="sliding-window side in pixels (default 1024: the sample in one)",
    )
    options.add_device(parser)
    parser.add_argument(
        "--cache",
        metavar="DIR",
        help="where the sample image is cached (default: $AEROSEG_CACHE, else $XDG_CACHE_HOME/aeroseg or "
        "~/.cache/aeroseg)",
    )
    options.add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from aeroseg.prediction.api import predict  # torch loads only when the command runs
    from aeroseg.prediction.classes import parse_classes
    from aeroseg.prediction.paths import check_folder
    from aeroseg.prediction.settings import settings_of

    classes = parse_classes(args.classes)
    check_folder(Path(args.output))  # before any download: a folder that cannot be made is refused
    device = resolve_device(args.device)
    if args.image:
        if not args.image.startswith(("http://", "https://")) and not Path(args.image).is_file():
            raise UserError(f"image {args.image} does not exist; pass an existing file or an http(s) URL")
        image, stem = args.image, Path(args.image.split("?", 1)[0]).stem or "image"
    else:
        image, stem = str(fetch_sample(SAMPLE, cache_dir(args.cache))), SAMPLE.stem
    request = options.model_request(args, registry.DEFAULT_SEGMENTER)
    model = registry.segmenter(request, device)
    out_dir = Path(args.output)
    result = predict(
        model,
        image,
        classes,
        out_dir / f"{stem}.tif",
        overlay=True,
        window=args.window,
        device=device,
        progress=not args.quiet,
        settings=settings_of(classes, request, window=args.window),  # as aeroseg predict records them
    )
    if not args.quiet:
        counts = np.bincount(result.class_map.ravel(), minlength=256)
        shares = "  ".join(
            f"{name} {100 * counts[i] / max(1, result.class_map.size):.1f}%"
            for i, name in enumerate(result.class_names)
        )
        written = " and ".join(str(result.outputs[k]) for k in ("classes", "overlay"))
        print(f"aeroseg demo: wrote {written}\n  {shares}", file=sys.stderr)
    return 0


def fetch_sample(sample: Sample, cache: Path) -> Path:
    """The cached GeoTIFF of ``sample``, read from its URL on first use (a window, by range requests)."""
    key = hashlib.sha256(f"{sample.url}|{sample.side}|{sample.decimation}".encode()).hexdigest()[:12]
    path = cache / "samples" / f"{sample.stem}-{key}.tif"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_TIMEOUT=60):
            with rasterio.open(sample.url) as src:
                side = min(src.width, src.height, sample.side * sample.decimation)
                window = Window((src.width - side) // 2, (src.height - side) // 2, side, side)
                out = max(1, round(side / sample.decimation))
                bands = list(range(1, min(src.count, 3) + 1))
                data = src.read(
                    bands, window=window, out_shape=(len(bands), out, out), resampling=Resampling.average
                )
                profile = dict(
                    driver="GTiff",
                    width=out,
                    height=out,
                    count=len(bands),
                    dtype=data.dtype,
                    crs=src.crs,
                    transform=src.window_transform(window) @ Affine.scale(side / out),
                    compress="deflate",
                )
        with atomic(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
    except (RasterioError, OSError) as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise UserError(
            f"cannot download the sample image {sample.url} ({reason}); connect to the internet once (it is "
            f"then cached in {path.parent}), or segment a local image with --image FILE"
        ) from None
    return path
