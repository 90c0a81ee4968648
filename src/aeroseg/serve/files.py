"""Which files ``aeroseg serve`` may read, and uploads written into its own folder.

A path from the page is a path relative to one of the allowed roots (``--root``, else the folders of the
paths given on the command line, plus the upload folder). It is refused when it names a parent (``..``),
is absolute, or resolves (symlinks followed) outside every root, and before that when GDAL could read it
as something else than a file (:func:`aeroseg.serve.formats.client_path`). Uploads are streamed to disk
and refused beyond a size limit before they are complete.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path, PurePosixPath

from aeroseg.errors import UserError
from aeroseg.raster import IMAGE_SUFFIXES
from aeroseg.serve.formats import client_path
from aeroseg.serve.limits import TooLarge

LISTED_FILES = 500  # at most this many images are listed in the page's file menu


class ForbiddenPath(UserError):
    """A path outside the allowed roots (HTTP 403)."""


class FileAccess:
    """The allowed roots: every path the server opens goes through :meth:`resolve`."""

    def __init__(self, roots: Sequence[str | Path], upload_dir: Path) -> None:
        self.roots = list(dict.fromkeys(Path(r).resolve() for r in roots))
        self.upload_dir = upload_dir.resolve()

    def _all_roots(self) -> list[Path]:
        return [*self.roots, self.upload_dir]

    def resolve(self, name: str, *, folder: bool = False) -> Path:
        """The real path of ``name`` (relative to a root, or absolute inside one), a file (or a folder when
        ``folder``); :class:`ForbiddenPath` for anything outside the roots, :class:`UserError` when missing."""
        pure = PurePosixPath(client_path(name).replace("\\", "/"))
        if ".." in pure.parts:
            raise ForbiddenPath(f"{name!r} is not allowed: paths may not contain '..'")
        candidates = [Path(name)] if pure.is_absolute() else [root / pure for root in self._all_roots()]
        try:
            return self._existing(name, candidates, absolute=pure.is_absolute(), folder=folder)
        except OSError as error:  # e.g. a path too deep for the file system
            raise UserError(f"cannot look up {name[:80]!r}: {error.strerror}") from None

    def _existing(self, name: str, candidates: list[Path], *, absolute: bool, folder: bool) -> Path:
        for candidate in candidates:
            real = candidate.resolve()
            if not any(real.is_relative_to(root) for root in self._all_roots()):
                continue
            if real.is_file() or (folder and real.is_dir()):
                return real
        for candidate in candidates:  # the name exists but points outside the roots (e.g. a symlink)
            if candidate.exists():
                raise ForbiddenPath(f"{name!r} is outside the folders this server may read (--root)")
        if absolute:
            raise ForbiddenPath(f"{name!r} is outside the folders this server may read (--root)")
        raise UserError(f"{name!r} does not exist under {', '.join(map(str, self.roots))}")

    def display_name(self, path: Path) -> str:
        """``path`` relative to the first root that holds it (uploads: ``uploads/<name>``)."""
        for root in self.roots:
            if path.is_relative_to(root):
                return str(path.relative_to(root))
        if path.is_relative_to(self.upload_dir):
            return f"uploads/{path.relative_to(self.upload_dir)}"
        return str(path)

    def listing(self) -> list[str]:
        """Images under the roots (not following symlinks out of them), sorted, at most LISTED_FILES."""
        found: list[str] = []
        for root in self.roots:
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    path = Path(folder) / name
                    if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    if path.resolve().is_relative_to(root):
                        found.append(str(path.relative_to(root)))
                    if len(found) >= LISTED_FILES:
                        return found
        return found


def too_large(filename: str, max_bytes: int) -> TooLarge:
    return TooLarge(
        f"upload {filename[:80]!r} is larger than the limit of {max_bytes / 2**20:.3g} MiB "
        "(start the server with a higher --max-upload-mb)"
    )


async def save_upload(
    filename: str, chunks: AsyncIterator[bytes], upload_dir: Path, *, max_bytes: int
) -> Path:
    """Write an uploaded image into ``upload_dir`` under a fresh name; :class:`TooLarge` past ``max_bytes``
    (the partial file is removed), :class:`UserError` for a type other than GeoTIFF, PNG or JPEG."""
    suffix = Path(filename or "").suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise UserError(
            f"upload {filename[:80]!r}: only GeoTIFF, PNG or JPEG files ({', '.join(IMAGE_SUFFIXES)})"
        )
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(filename).stem)[:60] or "upload"
    path = upload_dir / f"{stem}-{uuid.uuid4().hex[:8]}{suffix}"
    size = 0
    try:
        with open(path, "wb") as file:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise too_large(filename, max_bytes)
                file.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
