"""What ``aeroseg serve`` holds in memory: the opened rasters, the loaded models and the feature caches.

- A raster is opened once (:class:`aeroseg.raster.RasterSource`, so bands and scaling are those of
  ``aeroseg predict``) and named by a short id in the page's URLs.
- A model is loaded once per name: ``default`` (the one given on the command line), a preset name, or a
  checkpoint directory under the allowed roots. At most :data:`LOADED_MODELS` stay loaded.
- Image features are cached per (model, raster) in a :class:`FeatureBudget`: every view of a raster shares
  it, so segmenting a view again with another class list skips the image encoders. At most
  :data:`CACHED_RASTERS` caches are kept, each with half of the memory budget.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aeroseg.errors import UserError
from aeroseg.inference import FeatureCache
from aeroseg.raster import RasterSource, ReadOptions
from aeroseg.serve.files import FileAccess
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
    ) -> None:
        self.access = access
        self._load = load  # model name -> model in eval mode (raises UserError)
        self._read = read or ReadOptions()
        self._cache_bytes = cache_bytes
        self._lock = threading.RLock()
        self._rasters: dict[str, Raster] = {}
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._caches: OrderedDict[tuple[str, str], FeatureBudget] = OrderedDict()

    # ---------------------------------------------------------------------------------------- rasters
    def open(self, name: str | Path) -> Raster:
        """The raster at ``name`` (checked against the allowed roots), opened once."""
        path = self.access.resolve(str(name))
        with self._lock:
            for raster in self._rasters.values():
                if raster.path == path:
                    return raster
            source = RasterSource(str(path), self._read)
            try:
                georeferenced = source.crs is not None
                frame = map_frame(
                    str(path), height=source.height, width=source.width, georeferenced=georeferenced
                )
            except Exception as error:
                source.close()
                raise UserError(f"cannot show {path.name} on a map: {error}") from None
            raster = Raster(uuid.uuid4().hex[:10], path, self.access.display_name(path), source, frame)
            self._rasters[raster.id] = raster
            return raster

    def raster(self, raster_id: str) -> Raster:
        with self._lock:
            if raster_id not in self._rasters:
                raise UserError(f"no open image with id {raster_id!r}; open it again from the file menu")
            return self._rasters[raster_id]

    def rasters(self) -> list[Raster]:
        with self._lock:
            return list(self._rasters.values())

    # ----------------------------------------------------------------------------------------- models
    def model(self, name: str) -> Any:
        """The model called ``name``, loaded on first use; the least recently used one is dropped beyond
        :data:`LOADED_MODELS` (with its feature caches)."""
        name = name.strip() or DEFAULT_MODEL
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            model = self._load(name)
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
