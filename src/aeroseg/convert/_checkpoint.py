"""Shared helpers: read original checkpoint files, load renamed tensors into ``transformers`` models."""

import re
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import PretrainedConfig, PreTrainedModel
from transformers.initialization import no_init_weights

from aeroseg.errors import CheckpointError
from aeroseg.weight_files import load_weights_only, safetensors_shapes

StateDict = dict[str, torch.Tensor]


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding ``<name>/constants.pkl``; ``torch.save`` zips have none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def read_state_dict(path: str | Path, expected: str) -> StateDict:
    """Tensors of a ``.safetensors``, TorchScript or ``torch.save`` file, never unpickling arbitrary objects.

    A top-level ``"state_dict"`` or ``"model"`` entry holding the tensors is unwrapped, and a ``"module."``
    prefix (DistributedDataParallel) removed. ``expected`` names the format in error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected {expected}")
    if path.suffix == ".safetensors":
        safetensors_shapes(path)  # a truncated file: one line saying so
    elif not is_torchscript(path):
        # memory-mapped (a zip checkpoint's tensors are read when used), else read whole (legacy format)
        data = load_weights_only(path, expected, mmap=zipfile.is_zipfile(path))
    try:
        if path.suffix == ".safetensors":
            data = load_file(path)
        elif is_torchscript(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                data = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except (OSError, RuntimeError, ValueError, EOFError, SafetensorError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: cannot read it as {expected} ({reason[:200]})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: holds no dictionary of tensors; expected {expected}")
    if all(key.startswith("module.") for key in data):
        data = {key[len("module.") :]: value for key, value in data.items()}
    return data


def require(state: StateDict, key: str, path: Path, expected: str) -> torch.Tensor:
    """``state[key]``, or a one-line CheckpointError naming the missing key."""
    if key not in state:
        raise CheckpointError(f"{path}: missing tensor {key!r}; expected {expected}")
    return state[key]


def count_indexed(state: StateDict, prefix: str) -> int:
    """Number of consecutive ``prefix<i>.`` groups (``prefix`` ends with a dot), e.g. transformer blocks."""
    n = 0
    while any(key.startswith(f"{prefix}{n}.") for key in state):
        n += 1
    return n


def rename_mlp(key: str, num_layers: int) -> str:
    """``...layers.<i>.<param>`` of an original ``MLP`` (a list of ``num_layers`` linears) to the names of the
    ``transformers`` MLP: first -> ``proj_in``, last -> ``proj_out``, middle ``i`` -> ``layers.<i-1>``."""
    stem, _, index, param = key.rsplit(".", 3)
    i = int(index)
    if i == 0:
        return f"{stem}.proj_in.{param}"
    if i == num_layers - 1:
        return f"{stem}.proj_out.{param}"
    return f"{stem}.layers.{i - 1}.{param}"


def build_and_load(
    model_cls: type[PreTrainedModel],
    config: PretrainedConfig,
    converted: StateDict,
    path: Path,
    expected: str,
) -> PreTrainedModel:
    """Build ``model_cls(config)`` without random initialisation and load ``converted`` into it.

    Every entry of the model's ``state_dict`` must be provided, with the right shape, so that no weight is
    left uninitialised; a mismatch is a one-line CheckpointError. Tensors are cast to float32.
    """
    with no_init_weights():
        model = model_cls(config)
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(converted))
    extra = sorted(set(converted) - set(wanted))
    wrong = [k for k in wanted if k in converted and wanted[k].shape != converted[k].shape]
    if missing or extra or wrong:
        detail = "; ".join(
            f"{label} {names[:3]}{'...' if len(names) > 3 else ''}"
            for label, names in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
            if names
        )
        raise CheckpointError(f"{path}: does not fit the architecture ({detail}); expected {expected}")
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    return model.eval()


def apply_rules(key: str, rules: list[tuple[str, str]]) -> str | None:
    """Rename ``key`` by the first ``(pattern, replacement)`` whose pattern matches all of it, else None."""
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(replacement)
    return None


def reject_unknown(unknown: list[str], path: Path, expected: str) -> None:
    """One-line CheckpointError listing (the first few) tensors that no rule converts."""
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise CheckpointError(f"{path}: unexpected tensors {unknown[:3]}{more}; expected {expected}")
