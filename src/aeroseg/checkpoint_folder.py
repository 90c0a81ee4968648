"""The checkpoint folder of a model family (SED, SAN, SCAN): ``config.json`` = ``{"format": <family>, "config":
{...}, <backbone architectures>}``, ``model.safetensors`` and the CLIP tokenizer's files; self-contained, so
the model is rebuilt from the folder alone.

Every file is written under a temporary name and renamed into place, ``config.json`` last (a folder with a
``config.json`` is complete); a folder that is not the family's, or whose weights do not fit its config,
is refused in one line.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from safetensors.torch import load_model, save_model
from torch import nn

from aeroseg.atomic import atomic, temporary_path
from aeroseg.config import CONFIG_NAME, WEIGHTS_NAME, ConfigBase
from aeroseg.errors import CheckpointError
from aeroseg.weight_files import checked_build

C = TypeVar("C", bound=ConfigBase)
M = TypeVar("M", bound=nn.Module)


def save_folder(
    model: nn.Module, directory: str | os.PathLike[str], meta: dict[str, Any], tokenizer: Any
) -> None:
    """Write ``meta`` as ``config.json``, ``model``'s tensors as ``model.safetensors`` and ``tokenizer``'s files
    into ``directory`` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp_tokenizer = temporary_path(directory / "tokenizer")
    try:
        tokenizer.save_pretrained(tmp_tokenizer)
        for file in sorted(tmp_tokenizer.iterdir()):
            os.replace(file, directory / file.name)
    finally:
        shutil.rmtree(tmp_tokenizer, ignore_errors=True)
    with atomic(directory / WEIGHTS_NAME) as tmp:
        save_model(model, str(tmp), metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates its files with mode 0600
    with atomic(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def read_meta(directory: str | os.PathLike[str], fmt: str, name: str, hint: str = "") -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder of format ``fmt`` (the family called ``name`` in messages;
    ``hint`` ends the message about a folder that is not one)."""
    directory = Path(directory).expanduser()
    if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
        raise CheckpointError(
            f"{directory} is not a {name} checkpoint directory: it needs {CONFIG_NAME} and {WEIGHTS_NAME}{hint}"
        )
    try:
        meta = json.loads((directory / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != fmt or not isinstance(meta.get("config"), dict):
        raise CheckpointError(
            f"{directory} is not a {name} checkpoint (its config.json has no {name} config)"
        )
    return meta


def folder_config(
    config_class: type[C],
    meta: dict[str, Any],
    directory: Path,
    preset: str | None,
    overrides: dict[str, Any],
) -> C:
    """The saved config, checked to be of ``preset`` when one is given, with ``overrides`` (config fields:
    inference switches; a field of the architecture makes the weights not fit, refused by :func:`load_weights`)."""
    try:
        config = config_class.from_dict(meta["config"]).replace(**overrides)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{directory}: {str(error).splitlines()[0]}") from None
    if preset is not None and preset != config.preset:
        raise CheckpointError(f"{directory} holds a {config.preset!r} model, not {preset!r}")
    return config


def build_and_load(build: Callable[[], M], directory: str | os.PathLike[str], map_location: str) -> M:
    """``build()`` (the model of the folder's config, random weights) with ``model.safetensors`` loaded into
    it; a truncated file, or a config that does not fit the file's tensors, is refused in one line before the
    model is allocated (:func:`aeroseg.weight_files.checked_build`)."""
    directory = Path(directory).expanduser()
    model = checked_build(build, directory / WEIGHTS_NAME, directory / CONFIG_NAME)
    load_weights(model, directory, map_location)
    return model


def load_weights(model: nn.Module, directory: Path, map_location: str) -> None:
    """Load ``model.safetensors`` into ``model``; every tensor must be there, with no other."""
    file = Path(directory).expanduser() / WEIGHTS_NAME
    try:
        missing, unexpected = load_model(model, str(file), strict=False, device=map_location)
    except RuntimeError as error:  # a tensor of another shape (an override of the architecture)
        reason = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{file} does not match its config: {reason[:300]}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{file} does not match its config ({len(missing)} missing, {len(unexpected)} unexpected tensors, "
            f"e.g. {(missing or unexpected)[0]})"
        )
