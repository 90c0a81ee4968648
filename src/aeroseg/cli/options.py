"""Flags shared by the verbs: one name, one wording and one check per setting across all of them.

Old spellings stay accepted as hidden aliases (not shown in ``--help``). Nothing here imports torch, so
``aeroseg --help`` and the argument parsing stay fast.
"""

from __future__ import annotations

import argparse
import re

from aeroseg.errors import UserError

DEVICE_HELP = "auto (the first GPU when there is one, else the CPU), cpu, cuda or cuda:N"
DEVICE_METAVAR = "DEVICE"
WEIGHTS_METAVAR = "ID|DIR|FILE"  # hub id, transformers directory or original checkpoint file
_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to every option whose help does not already name its default."""

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
