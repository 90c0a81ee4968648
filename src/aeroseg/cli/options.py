"""Flags shared by the verbs: one name, one wording and one check per setting across all of them.

Old spellings stay accepted as hidden aliases (not shown in ``--help``). Nothing here imports torch, so
``aeroseg --help`` and the argument parsing stay fast.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from typing import Any

from aeroseg import device
from aeroseg.errors import UserError
from aeroseg.registry import ModelRequest

DEVICE_HELP = device.HELP
DEVICE_METAVAR = "DEVICE"
WEIGHTS_METAVAR = "ID|DIR|FILE"  # hub id, transformers directory or original checkpoint file
_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


# old spellings carried by a flag's own action, not shown in --help: a required flag takes its old spelling
# this way (argparse counts a required flag as given only under its own action, so add_alias cannot serve)
HIDDEN_SPELLINGS = ("--out",)


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to every option whose help does not already name its default, and leaves out
    the :data:`HIDDEN_SPELLINGS`."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [s for s in action.option_strings if s not in HIDDEN_SPELLINGS]
        if shown != action.option_strings:
            action = copy.copy(action)
            action.option_strings = shown
        return super()._format_action_invocation(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = default is not None and default is not False and default is not argparse.SUPPRESS
        if shown and "default" not in text and action.option_strings and default != "":
            if isinstance(default, (tuple, list)):
                default = ",".join(str(v) for v in default)
            text += f" (default: {str(default).replace('%', '%%')})"
        return text


def check_device(text: str) -> str:
    """``text`` if it names a device (auto, cpu, mps, cuda, cuda:N, xpu, xpu:N), else a :class:`UserError`."""
    if not _DEVICE.match(text):
        raise UserError(f"unknown --device {text!r}; use {DEVICE_HELP}")
    return text


def add_device(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str | None = "auto"
) -> None:
    """``--device``; each verb resolves it (and refuses an unknown name in one line) when it runs."""
    parser.add_argument("--device", default=default, metavar=DEVICE_METAVAR, help=DEVICE_HELP)


def add_quiet(parser: argparse.ArgumentParser | argparse._ArgumentGroup, **kwargs: object) -> None:
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars, weight-loading bars or summary (errors are still printed)",
        **kwargs,  # type: ignore[arg-type]
    )


def add_alias(parser: argparse.ArgumentParser, *names: str, dest: str, **kwargs: object) -> None:
    """Old spellings of a flag: accepted, not shown in ``--help``, never overriding the default."""
    parser.add_argument(*names, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]


WEIGHT_FLAGS = ("clip", "guidance", "simfeatup", "sam3")  # backbone sources, each a config field of a family


def add_model(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default_preset: str | None,
    checkpoint: bool = True,
) -> None:
    """The flags that name a model, the same in every verb: ``--checkpoint`` (a trained model), or ``--preset``
    with its backbones' weights (``--clip``, ``--guidance``, ``--simfeatup``, ``--sam3``), and ``--config``
    (a YAML whose ``model:`` overrides fields of the preset's config). Read them with :func:`model_request`."""
    if checkpoint:
        parser.add_argument(
            "--checkpoint",
            metavar="DIR|FILE",
            help="trained model: a folder written by aeroseg train (or its run folder), a hub id, or a CAT-Seg / "
            "OVRS .pth",
        )
    shown = f"; default {default_preset}" if default_preset else ""
    parser.add_argument(
        "--preset",
        metavar="NAME",
        help=f"model preset (`aeroseg presets`{shown}); with --checkpoint: the preset the file holds",
    )
    parser.add_argument("--clip", metavar=WEIGHTS_METAVAR, help="the preset's CLIP weights")
    parser.add_argument(
        "--guidance",
        metavar=f"{WEIGHTS_METAVAR}|none",
        help="the preset's SAM / SAM2 weights (training-free: none)",
    )
    parser.add_argument("--simfeatup", metavar="FILE|URL|hf://...|none", help="segearth-ov: SimFeatUp .ckpt")
    parser.add_argument("--sam3", metavar="ID|DIR", help="segearth-ov3: SAM 3 (default facebook/sam3)")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="model settings: a YAML with model: overrides, e.g. configs/<dataset>/training-free/<preset>.yaml",
    )


def model_request(args: argparse.Namespace, default_preset: str | None = None) -> ModelRequest:
    """The :class:`aeroseg.registry.ModelRequest` of the flags :func:`add_model` declared."""
    weights = {k: getattr(args, k) for k in WEIGHT_FLAGS if getattr(args, k, None) is not None}
    checkpoint = getattr(args, "checkpoint", None)
    preset = getattr(args, "preset", None) or (None if checkpoint else default_preset)
    config = getattr(args, "config", None)
    overrides = config_file_overrides(config, preset) if config else {}
    return ModelRequest(
        checkpoint=None if checkpoint is None else str(checkpoint),
        preset=preset,
        weights=weights,
        overrides=overrides,
    )


def quiet_libraries(quiet: bool) -> None:
    """Silence the progress bars of transformers and huggingface_hub (weight loading, downloads) under
    ``--quiet`` and when stderr is not a terminal (a log file gets no bars)."""
    if not quiet and sys.stderr.isatty():
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils.logging import disable_progress_bar

    disable_progress_bars()
    disable_progress_bar()


def config_file_overrides(path: str, preset: str | None) -> dict[str, Any]:
    """The ``model:`` overrides of a model settings file (``configs/<dataset>/training-free/<preset>.yaml``, or
    any YAML with ``preset:`` and ``model:``), checked to be written for ``preset`` when one is given."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"cannot read --config {path} ({type(error).__name__}); pass a YAML file") from None
    if not isinstance(document, dict) or not isinstance(document.get("model") or {}, dict):
        raise UserError(f"--config {path} must be a YAML mapping with preset: and model: keys")
    if preset is not None and document.get("preset") not in (None, preset):
        raise UserError(f"--config {path} is not a {preset} file (its preset: is {document.get('preset')!r})")
    return dict(document.get("model") or {})
