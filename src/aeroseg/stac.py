"""STAC in and out: the images of STAC Items as inputs of a prediction, and a STAC Item beside each output.

Inputs (:func:`iter_inputs`): a ``.json`` path or URL is read as STAC: an Item, an ItemCollection, or a
Catalog / Collection (all its Items, recursively); ``--stac-search URL`` queries a STAC API (pystac-client,
``--collection``, ``--bbox``, ``--datetime``, at most ``--max-items``). Of each Item one asset is segmented:
``--asset KEY``, else the asset with the role ``visual``, else the first raster asset with the role ``data``.
Its bands are chosen by the names of its ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1): ``--bands
B04,B03,B02`` (a name or a common name per band); without ``--bands``, the bands whose common names are red,
green and blue when the asset describes them (band numbers, ``--bands 4,3,2``, count the asset's bands).

Every image is a :class:`StacInput`, a string (the asset's absolute href, which rasterio opens, local or
remote) carrying the Item: the predict loop, the Python API and the Ray units take it where they take a
path (:class:`aeroseg.raster.RasterSource` reads its bands). Its outputs are named after the Item's id, the
class raster records the Item's id, collection, datetime, asset and links (:func:`input_tags`), and
:func:`write_output_item` writes ``<stem>.json`` beside it: a STAC Item of the outputs whose class asset lists
the classes with the ``classification`` extension (v2.0.0) and links ``derived_from`` the input Item.

Needs the ``geo`` extra (pystac, pystac-client).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aeroseg import __version__
from aeroseg.atomic import write_text
from aeroseg.errors import UserError
from aeroseg.extras import require
from aeroseg.progress import write_line
from aeroseg.raster import expand_inputs, is_url, one_line

RASTER_TYPES = ("image/tiff", "image/jp2", "image/png", "image/jpeg", "image/vnd.stac.geotiff")
RGB = ("red", "green", "blue")
CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
TAG = "AEROSEG_STAC_"  # prefix of the class raster's tags about the input Item


@dataclass(frozen=True)
class StacOptions:
    """How STAC inputs are found and read."""

    asset: str | None = None  # asset key to segment; None: role "visual", else role "data"
    bands: tuple[str, ...] | None = None  # band names (eo:bands name or common name) for R,G,B or grey
    search: str | None = None  # STAC API to search (its landing page URL)
    collections: tuple[str, ...] = ()  # collections searched
    bbox: tuple[float, float, float, float] | None = None  # west, south, east, north (WGS84 degrees)
    datetime: str | None = None  # RFC 3339 instant or interval, e.g. 2024-06-01/2024-06-30
    max_items: int = 100  # at most this many Items of a search are segmented

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise UserError(f"--max-items must be at least 1, got {self.max_items}")
        if self.bbox is not None and not (self.bbox[0] <= self.bbox[2] and self.bbox[1] <= self.bbox[3]):
            raise UserError("--bbox is WEST,SOUTH,EAST,NORTH with WEST <= EAST and SOUTH <= NORTH")
        if self.bands is not None and len(self.bands) not in (1, 3):
            raise UserError(f"--bands takes one or three band names, got {','.join(self.bands)}")


class StacInput(str):
    """The image of one STAC Item asset: the string is the asset's absolute href (what rasterio opens).

    ``stem``: the outputs' name (the Item id, made a file name); ``asset``: the asset key; ``bands``: the
    1-based bands read for R,G,B (or grey), None for the reader's own choice; ``item``: the Item as JSON.
    """

    stem: str
    asset: str
    bands: tuple[int, ...] | None
    item: dict[str, Any]

    def __new__(
        cls, href: str, *, stem: str, asset: str, bands: tuple[int, ...] | None, item: dict[str, Any]
    ) -> StacInput:
        self = super().__new__(cls, href)
        self.stem, self.asset, self.bands, self.item = stem, asset, bands, item
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[str], dict[str, Any]]:  # pickled to Ray workers
        return (str(self),), {"stem": self.stem, "asset": self.asset, "bands": self.bands, "item": self.item}


def is_stac_path(text: str) -> bool:
    """Whether an input names a STAC JSON document (a path, pattern or URL ending in .json)."""
    return text.split("?", 1)[0].split("#", 1)[0].lower().endswith(".json")


def iter_inputs(inputs: Sequence[str], options: StacOptions = StacOptions()) -> Iterator[str]:
    """The images of ``inputs`` in order, each once: STAC JSON documents give their Items' images
    (:class:`StacInput`), other inputs their files (:func:`aeroseg.raster.expand_inputs`), then the Items of
    the search of ``options``. Band names (``options.bands``) are refused for inputs that are not STAC."""
    seen: set[str] = set()

    def new(found: Iterator[str]) -> Iterator[str]:
        for image in found:
            if image not in seen:
                seen.add(image)
                yield image

    for text in inputs:
        if not is_stac_path(text):
            if options.bands is not None:
                raise UserError(
                    f"--bands {','.join(options.bands)} names bands, which only STAC Items describe "
                    f"(eo:bands); {text} is not a STAC file: give band numbers"
                )
            yield from new(iter(expand_inputs([text])))
            continue
        for document in _documents(text):
            yield from new(item_input(item, options, where) for item, where in _items(document))
    if options.search is not None:
        yield from new(search_inputs(options))


def _documents(text: str) -> list[str]:
    if is_url(text) or os.path.exists(text):
        return [text]
    if glob.has_magic(text):
        matches = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        if matches:
            return matches
        raise UserError(f"no file matches {text}")
    raise UserError(f"input {text} does not exist")


def _items(href: str) -> Iterator[tuple[Any, str]]:
    """(pystac Item, the href its relative asset hrefs resolve against) of a STAC document."""
    pystac = require("pystac", "a STAC input")
    try:
        kind = pystac.StacIO.default().read_json(href).get("type")
        if kind == "Feature":
            yield pystac.Item.from_file(href), href
        elif kind == "FeatureCollection":
            for item in pystac.ItemCollection.from_file(href):
                yield item, href
        elif kind in ("Catalog", "Collection"):
            for item in pystac.read_file(href).get_items(recursive=True):
                yield item, item.get_self_href() or href
        else:
            raise UserError(
                f"{href} is not a STAC Item, ItemCollection, Catalog or Collection (type {kind!r})"
            )
    except (OSError, ValueError, AttributeError, pystac.STACError) as error:
        raise UserError(f"cannot read the STAC file {href}: {one_line(error)}") from None


def search_inputs(options: StacOptions) -> Iterator[StacInput]:
    """The images of the Items a STAC API search finds (at most ``options.max_items``; a line says so
    when more matched)."""
    client = require("pystac_client", "--stac-search")
    pystac = require("pystac", "--stac-search")
    url = options.search
    try:
        search = client.Client.open(url).search(
            collections=list(options.collections) or None,
            bbox=list(options.bbox) if options.bbox else None,
            datetime=options.datetime,
            max_items=options.max_items + 1,
        )
        for n, item in enumerate(search.items()):
            if n == options.max_items:
                write_line(
                    f"aeroseg: the search of {url} found more than {n} Items; the first {n} are segmented "
                    "(raise --max-items, or narrow --bbox / --datetime)"
                )
                return
            yield item_input(item, options, item.get_self_href() or url)
    except (OSError, ValueError, NotImplementedError, client.exceptions.APIError, pystac.STACError) as error:
        raise UserError(f"STAC search of {url} failed: {one_line(error)}") from None


def item_input(item: Any, options: StacOptions, base: str) -> StacInput:
    """The image to segment of a pystac Item: its asset (see the module docstring) and bands; ``base`` is
    the href that relative asset hrefs are relative to."""
    from pystac.utils import make_absolute_href

    key = choose_asset(item, options.asset)
    asset = item.assets[key]
    href = asset.get_absolute_href() or make_absolute_href(asset.href, base)
    if not is_url(href):
        href = href.removeprefix("file://")
    described = _band_descriptions(asset.extra_fields, item.properties)
    bands = band_numbers(described, options.bands, f"{item.id}: asset {key!r}")
    document = item.to_dict(include_self_link=True, transform_hrefs=False)
    document["assets"][key]["href"] = href
    self_href = item.get_self_href()  # an Item of an ItemCollection may have none
    links = [{"rel": link.rel, "href": _link_href(link)} for link in item.links if link.rel != "self"]
    document["links"] = links + ([{"rel": "self", "href": self_href}] if self_href else [])
    return StacInput(href, stem=_file_name(item.id), asset=key, bands=bands, item=document)


def choose_asset(item: Any, key: str | None) -> str:
    """The asset key of ``item`` to segment: ``key``, else role (or key) ``visual``, else role ``data``."""
    keys = ", ".join(item.assets) or "none"
    if key is not None:
        if key not in item.assets:
            raise UserError(f"STAC Item {item.id} has no asset {key!r} (its assets: {keys})")
        return key
    rasters = {k: a for k, a in item.assets.items() if _is_raster(a.media_type)}
    for k, asset in rasters.items():
        if "visual" in (asset.roles or []) or k == "visual":
            return k
    for k, asset in rasters.items():
        if "data" in (asset.roles or []):
            return k
    raise UserError(
        f"STAC Item {item.id} has no raster asset with the role 'visual' or 'data' (its assets: {keys}); "
        "choose one with --asset KEY"
    )


def band_numbers(
    described: list[dict[str, Any]], names: Sequence[str] | None, where: str
) -> tuple[int, ...] | None:
    """1-based bands of an asset whose bands are ``described`` (eo:bands): those called ``names`` (name or
    common name), else its red, green, blue bands unless they are already 1, 2, 3; None for the reader's
    own choice."""

    def called(band: dict[str, Any]) -> set[str]:
        common = band.get("common_name") or band.get("eo:common_name")
        return {str(v).lower() for v in (band.get("name"), common) if v}

    if names is None:
        found = [next((i for i, b in enumerate(described, 1) if c in called(b)), None) for c in RGB]
        numbers = tuple(n for n in found if n is not None)
        return numbers if len(numbers) == 3 and numbers != (1, 2, 3) else None
    if not described:
        raise UserError(f"{where} describes no bands (eo:bands), so --bands {','.join(names)} names nothing")
    numbers = []
    for name in names:
        number = next((i for i, b in enumerate(described, 1) if name.lower() in called(b)), None)
        if number is None:
            known = ", ".join("/".join(sorted(called(b))) or f"#{i}" for i, b in enumerate(described, 1))
            raise UserError(f"{where} has no band called {name!r} (its bands: {known})")
        numbers.append(number)
    return tuple(numbers)


def input_tags(image: object) -> dict[str, str]:
    """The tags a class raster records about its input Item (none for an input that is not STAC)."""
    if not isinstance(image, StacInput):
        return {}
    properties = image.item.get("properties", {})
    when = properties.get("datetime") or "/".join(
        str(properties.get(k) or "..") for k in ("start_datetime", "end_datetime")
    )
    return {
        f"{TAG}ITEM": image.item["id"],
        f"{TAG}COLLECTION": image.item.get("collection") or "",
        f"{TAG}DATETIME": when,
        f"{TAG}ASSET": image.asset,
        f"{TAG}LINKS": json.dumps(image.item.get("links", [])),
    }


def write_output_item(
    path: Path,
    image: StacInput,
    files: dict[str, Path],
    names: list[str],
    colours: list[tuple[int, int, int]],
    *,
    nodata: int,
    cog: bool,
) -> None:
    """Write the STAC Item of a prediction's ``files`` (classes, scores, overlay) to ``path``, beside them:
    the input Item's geometry and datetime, the class raster's projection, its classes (``classification``
    extension), and a ``derived_from`` link to the input Item."""
    import rasterio

    source = image.item
    classes = files["classes"]
    tiff = "image/tiff; application=geotiff" + ("; profile=cloud-optimized" if cog else "")
    if classes.suffix.lower() == ".vrt":  # a distributed run's scene over its parts (aeroseg.distributed)
        tiff = "application/xml; application=gdal-vrt"
    classification = [
        {
            "value": i,
            "name": _class_key(name, i),
            "title": name,
            "color_hint": "{:02X}{:02X}{:02X}".format(*c),
        }
        for i, (name, c) in enumerate(zip(names, colours, strict=True))
    ] + [{"value": nodata, "name": "nodata", "title": "no data", "nodata": True}]
    is_png = classes.suffix.lower() == ".png"
    assets: dict[str, Any] = {
        "classes": {
            "href": f"./{classes.name}",
            "type": "image/png" if is_png else tiff,
            "title": "class ids",
            "roles": ["data"],
            "classification:classes": classification,
        }
    }
    if "scores" in files:
        kind = "image/png" if is_png else tiff
        assets["scores"] = {"href": f"./{files['scores'].name}", "type": kind, "roles": ["data"]}
        assets["scores"]["title"] = "best class probability" + (" × 255" if is_png else "")
    if "overlay" in files:
        assets["overlay"] = {"href": f"./{files['overlay'].name}", "type": "image/png", "roles": ["overview"]}
        assets["overlay"]["title"] = "classes over the image, with a legend"
    properties = {
        k: v
        for k, v in source.get("properties", {}).items()
        if k in ("datetime", "start_datetime", "end_datetime")
    }
    properties.setdefault("datetime", None)
    properties["description"] = f"aeroseg {__version__}: classes {', '.join(names)} of {source['id']}"
    extensions = [CLASSIFICATION]
    if not is_png:
        with rasterio.open(classes) as ds:
            if ds.crs is not None:
                epsg = ds.crs.to_epsg()
                if epsg:
                    properties["proj:code"] = f"EPSG:{epsg}"
                else:
                    properties["proj:wkt2"] = ds.crs.to_wkt()
                properties["proj:shape"] = [ds.height, ds.width]
                properties["proj:transform"] = list(ds.transform)[:6]
                extensions.append(PROJECTION)
    self_href = next((link["href"] for link in source.get("links", []) if link["rel"] == "self"), None)
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": extensions,
        "id": f"{image.stem}-aeroseg",
        "geometry": source.get("geometry"),
        "bbox": source.get("bbox"),
        "properties": properties,
        "links": [{"rel": "derived_from", "href": self_href, "type": "application/json"}]
        if self_href
        else [],
        "assets": assets,
    }
    if item["bbox"] is None:
        del item["bbox"]
    write_text(path, json.dumps(item, indent=2) + "\n")


def _band_descriptions(fields: dict[str, Any], properties: dict[str, Any]) -> list[dict[str, Any]]:
    bands = fields.get("eo:bands") or fields.get("bands") or properties.get("eo:bands") or []
    return [b for b in bands if isinstance(b, dict)]


def _is_raster(media_type: str | None) -> bool:
    return media_type is None or media_type.split(";")[0].strip().lower() in RASTER_TYPES


def _link_href(link: Any) -> str:
    try:
        return link.get_absolute_href() or link.href
    except (ValueError, AttributeError):
        return link.href


def _file_name(text: str) -> str:
    """An Item id as a file name (characters other than letters, digits, ``.``, ``-``, ``_`` become ``_``)."""
    return re.sub(r"[^\w.-]", "_", text).strip(".") or "item"


def _class_key(name: str, index: int) -> str:
    """A class name as the ``classification`` extension's ``name`` (letters, digits, ``-``, ``_``)."""
    key = re.sub(r"[^0-9A-Za-z_-]+", "_", name).strip("_")
    return key or f"class_{index}"
