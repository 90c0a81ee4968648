"""What ``aeroseg serve`` holds in memory: the opened rasters, the loaded models and the feature caches.

- A raster is opened once (:class:`aeroseg.raster.RasterSource`, so bands and scaling are those of
  ``aeroseg predict``, with the formats of :mod:`aeroseg.serve.formats` only) and named by a short id in
  the page's URLs. At most ``Limits.open_images`` stay open and uploads take at most
  ``Limits.upload_total_bytes``: beyond, the least recently used raster without a queued or running
  segmentation is closed, and deleted if it was an upload.
- A model is loaded once per name: ``default`` (the one given on the command line), a preset name, or a
  checkpoint directory under the allowed roots. At most :data:`LOADED_MODELS` stay loaded. Loading (a
  download, maybe) happens outside the catalog's lock, under a lock of that name only: the tiles, state
  requests and other models of other clients never wait for it; a second request for the same model
  waits for the first one's load instead of loading it again.
- Image features are cached per (model, raster) in a :class:`FeatureBudget`: every view of a raster shares
  it, so segmenting a view again with another class list skips the image encoders. At most
  :data:`CACHED_RASTERS` caches are kept, each with half of the memory budget.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aeroseg.errors import UserError
from aeroseg.inference import FeatureCache
from aeroseg.raster import RasterSource, ReadOptions, one_line
from aeroseg.serve.files import FileAccess
from aeroseg.serve.formats import probe
from aeroseg.serve.limits import Limits, TooLarge
from aeroseg.serve.tiles import MapFrame, map_frame

LOADED_MODELS = 2
CACHED_RASTERS = 2
DEFAULT_MODEL = "default"


@dataclass
class Raster:
    """An image opened for tiles and segmentation."""

    id: str
    path: Path
    name: str  # as shown in the page (relative to its root)
    source: RasterSource
    frame: MapFrame
    upload_bytes: int = 0  # size of an upload (its file is deleted on close); 0: a file under the roots
    jobs: int = 0  # segmentations queued or running on it: it stays open while there are any

    @property
    def driver(self) -> str:
        return self.source.driver

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "width": self.source.width,
            "height": self.source.height,
            "bands": list(self.source.bands),
            "crs": self.source.crs.to_string() if self.source.crs else None,
            **dataclasses.asdict(self.frame),
        }


def tensor_bytes(value: Any) -> int:
    """Bytes of all tensors in ``value`` (a tensor, dataclass, dict, list or tuple of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    return 0


class FeatureBudget(FeatureCache):
    """A :class:`FeatureCache` holding as many windows as fit in ``max_bytes``, measured on the first
    features it computes (every window of a model has features of the same size)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_windows=2**31)
        self.max_bytes = max_bytes
        self.window_bytes: int | None = None

    def features(self, model: Any, images: torch.Tensor) -> Any:
        feats = super().features(model, images)
        if self.window_bytes is None:
            self.window_bytes = max(1, tensor_bytes(feats) // len(images))
            self.max_windows = max(1, self.max_bytes // self.window_bytes)
            while self._entries and sum(n for n, _ in self._entries.values()) > self.max_windows:
                self._entries.popitem(last=False)
        return feats

    @property
    def held_bytes(self) -> int:
        return sum(n for n, _ in self._entries.values()) * (self.window_bytes or 0)


class Catalog:
    """Rasters, models and caches of one server; every method is thread-safe."""

    def __init__(
        self,
        access: FileAccess,
        load: Callable[[str], Any],
        *,
        cache_bytes: int,
        read: ReadOptions | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.access = access
        self._load = load  # model name -> model in eval mode (raises UserError)
        self._read = read or ReadOptions()
        self._cache_bytes = cache_bytes
        self.limits = limits or Limits()
        self._lock = threading.RLock()
        self._loading: dict[str, threading.Lock] = {}  # per model name: one load of it at a time
        self._rasters: OrderedDict[str, Raster] = OrderedDict()  # least recently used first
        self._pending_upload_bytes = 0
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._caches: OrderedDict[tuple[str, str], FeatureBudget] = OrderedDict()

    # ---------------------------------------------------------------------------------------- rasters
    def open(self, name: str | Path, *, upload_bytes: int = 0) -> Raster:
        """The raster at ``name`` (checked against the allowed roots), opened once; ``upload_bytes`` > 0
        for an upload (its pixels are limited, its file deleted when it is closed)."""
        path = self.access.resolve(str(name))
        with self._lock:
            if (found := self._find(path)) is not None:
                return found
        label = self.access.display_name(path)
        header = probe(str(path), label=label)
        if upload_bytes:
            self.limits.check_upload(header.width, header.height, label)
        self.limits.check_blocks(*header.block, label)
        source = RasterSource(str(path), self._read, drivers=(header.driver,))  # reads outside the lock
        try:
            frame = map_frame(str(path), header.driver, tile_limit=self.limits.tile_pixels)
        except Exception as error:
            source.close()
            raise UserError(f"cannot show {label} on a map: {one_line(error)}") from None
        raster = Raster(uuid.uuid4().hex[:10], path, label, source, frame, upload_bytes)
        with self._lock:
            if (found := self._find(path)) is not None:  # opened by another request meanwhile
                source.close()
                return found
            self._rasters[raster.id] = raster
            while len(self._rasters) > self.limits.open_images and self._drop_idle(keep=raster.id):
                pass
        return raster

    def raster(self, raster_id: str) -> Raster:
        with self._lock:
            if raster_id not in self._rasters:
                raise UserError(f"no open image with id {raster_id[:40]!r}; open it again from the file menu")
            self._rasters.move_to_end(raster_id)
            return self._rasters[raster_id]

    def rasters(self) -> list[Raster]:
        with self._lock:
            return list(self._rasters.values())

    def hold(self, raster_id: str) -> Raster:
        """The raster ``raster_id``, kept open until :meth:`release` (a segmentation reads it)."""
        with self._lock:
            raster = self.raster(raster_id)
            raster.jobs += 1
            return raster

    def release(self, raster: Raster) -> None:
        with self._lock:
            raster.jobs -= 1

    @contextmanager
    def upload_room(self, nbytes: int) -> Iterator[None]:
        """Room for an upload of ``nbytes`` within ``Limits.upload_total_bytes``, made by closing and
        deleting the least recently used idle uploads; :class:`TooLarge` when uploads in use fill it."""
        with self._lock:
            while self._upload_bytes() + nbytes > self.limits.upload_total_bytes:
                if not self._drop_idle(uploads_only=True):
                    raise TooLarge(
                        f"uploads in use fill this server's {self.limits.upload_total_bytes / 2**20:.4g} MiB "
                        "(--max-upload-total-mb); try again when a segmentation has finished"
                    )
            self._pending_upload_bytes += nbytes
        try:
            yield
        finally:
            with self._lock:
                self._pending_upload_bytes -= nbytes

    def _find(self, path: Path) -> Raster | None:
        for raster in self._rasters.values():
            if raster.path == path:
                self._rasters.move_to_end(raster.id)
                return raster
        return None

    def _upload_bytes(self) -> int:
        return self._pending_upload_bytes + sum(r.upload_bytes for r in self._rasters.values())

    def _drop_idle(self, *, uploads_only: bool = False, keep: str | None = None) -> bool:
        """Close the least recently used raster without segmentations (an upload when ``uploads_only``;
        never ``keep``), deleting an upload's file; False when there is none."""
        for raster in self._rasters.values():
            if raster.jobs == 0 and raster.id != keep and (raster.upload_bytes or not uploads_only):
                del self._rasters[raster.id]
                raster.source.close()
                for key in [k for k in self._caches if k[1] == raster.id]:
                    del self._caches[key]
                if raster.upload_bytes:
                    raster.path.unlink(missing_ok=True)
                return True
        return False

    # ----------------------------------------------------------------------------------------- models
    def model(self, name: str) -> Any:
        """The model called ``name``, loaded on first use; the least recently used one is dropped beyond
        :data:`LOADED_MODELS` (with its feature caches)."""
        name = name.strip() or DEFAULT_MODEL
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            loading = self._loading.setdefault(name, threading.Lock())
        with loading:  # a slow download holds this lock only: every other request goes on
            with self._lock:
                if name in self._models:  # loaded by another request while this one waited
                    return self._models[name]
            model = self._load(name)
            with self._lock:
                self._models[name] = model
                while len(self._models) > LOADED_MODELS:
                    dropped, _ = self._models.popitem(last=False)
                    for key in [k for k in self._caches if k[0] == dropped]:
                        del self._caches[key]
            return model

    def cache(self, model_name: str, raster_id: str) -> FeatureBudget:
        """The feature cache shared by every view of ``raster_id`` under ``model_name``."""
        key = (model_name.strip() or DEFAULT_MODEL, raster_id)
        with self._lock:
            if key not in self._caches:
                self._caches[key] = FeatureBudget(self._cache_bytes // CACHED_RASTERS)
            self._caches.move_to_end(key)
            while len(self._caches) > CACHED_RASTERS:
                self._caches.popitem(last=False)
            return self._caches[key]

    def close(self) -> None:
        with self._lock:
            for raster in self._rasters.values():
                raster.source.close()
            self._rasters.clear()
            self._caches.clear()
            self._models.clear()
