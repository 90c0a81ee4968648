"""Weight files read without trusting them: a ``.safetensors`` header checked (complete file, every tensor's
shape) before a model is built, ``torch.save`` files read weights-only, each refusal one line naming the file.

    shapes = safetensors_shapes(path)                  # {name: shape}; a truncated file is refused
    model = checked_build(build, weights, config_file)  # built on the meta device first: shapes compared
    state = load_weights_only(path, "a SimFeatUp .ckpt")   # never unpickles; torch's own hint is not shown
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from torch import nn

from aeroseg.errors import CheckpointError

M = TypeVar("M", bound=nn.Module)
# what a config of values of the wrong type or range raises while a model is built from it (transformers'
# strict config dataclasses: hidden_size 1e9 is a float, not an int)
CONFIG_ERRORS = (ValueError, TypeError, KeyError, AttributeError, StrictDataclassError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def config_reason(error: BaseException) -> str:
    """A config error's text on one line ("Validation error for field 'hidden_size': TypeError: ...")."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return (text or type(error).__name__)[:300]


def unpickling_refusal(path: str | Path, error: BaseException | None = None) -> str:
    """The one line for a file that only unpickling would read (with the class it holds, when torch says)."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error or ""))
    holds = f" (it holds a {found.group(1)} object)" if found else ""
    return (
        f"{path} is not a safetensors or weights-only file; it would have to be unpickled, which aeroseg "
        f"never does for files it did not write{holds}"
    )


def load_weights_only(path: str | Path, expected: str, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file that needs unpickling, or that cannot be read,
    is a one-line :class:`CheckpointError` (``expected`` names what the file should be)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):  # an object of a class: only unpickling would make it
            raise CheckpointError(unpickling_refusal(path, error)) from None
        # torch's own text suggests turning weights_only off: only its diagnosis is kept
        found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(error))
        reason = f"not a torch.save file: {found.group(1).strip()}" if found else _first_line(error)
        raise CheckpointError(f"{path}: cannot read it as {expected} ({reason[:200]})") from None
    except (OSError, RuntimeError, ValueError, EOFError, KeyError) as error:
        raise CheckpointError(f"{path}: cannot read it as {expected} ({_first_line(error)})") from None


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the header of a ``.safetensors`` file, which must cover the whole file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path} is not a complete safetensors file ({_first_line(error)}); it may be truncated: copy or "
            "download it again"
        ) from None


def _size(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) or "a scalar"


def compare_shapes(
    wanted: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], path: Path, config_file: Path
) -> None:
    """Refuse in one line a file holding a tensor (``found``) of another shape than the model ``config_file``
    describes (``wanted``). Missing and unexpected names are the loader's to report (a tied weight is saved
    once)."""
    wrong = [k for k in wanted if k in found and tuple(found[k]) != tuple(wanted[k])]
    if wrong:
        key = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise CheckpointError(
            f"{path}: tensor {key} is {_size(tuple(found[key]))}, but {config_file} describes "
            f"{_size(tuple(wanted[key]))}{more}; the weights and the config.json are of different models"
        )


def meta_build(build: Callable[[], M], config_file: Path) -> M:
    """``build()`` on the meta device (shapes only, no memory), a config it cannot build from refused in one
    line naming ``config_file``."""
    try:
        with torch.device("meta"):
            return build()
    except CONFIG_ERRORS as error:
        raise CheckpointError(f"{config_file}: {config_reason(error)}") from None


def checked_build(build: Callable[[], M], weights: Path, config_file: Path) -> M:
    """``build()``, once the model it makes has been built on the meta device and found to fit ``weights``
    (a complete ``.safetensors``): a config asking for sizes the file does not hold (``hidden_size:
    1000000000``) is refused before any memory is allocated for it."""
    found = safetensors_shapes(weights)
    skeleton = meta_build(build, config_file)
    wanted = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    compare_shapes(wanted, found, weights, config_file)
    return build()
