"""The ``aeroseg`` command line: one sub-command per job, each in its own module.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Errors the user can fix
are raised as :class:`aeroseg.errors.UserError` and printed as one line with exit status 2.

Only the module of the command that runs is imported: ``aeroseg --help`` and ``aeroseg --version`` load
neither torch nor any command module.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aeroseg.cli import options
from aeroseg.cli.options import HelpFormatter
from aeroseg.errors import Terminated, UserError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "presets": ("aeroseg.cli.presets", "list the model presets"),
    "prepare": ("aeroseg.cli.prepare", "prepare iSAID, DLRSD, OpenEarthMap or your own labelled images"),
    "train": ("aeroseg.cli.train", "train a model on a prepared dataset"),
    "evaluate": ("aeroseg.cli.evaluate", "score a model or a folder of predictions (s/u/h-mIoU)"),
    "report": ("aeroseg.evaluation.report", "print the paper's tables from evaluation JSON files"),
    "predict": ("aeroseg.cli.predict", "segment images or GeoTIFFs of any size"),
    "bench": ("aeroseg.cli.bench", "measure speed, FLOPs and memory of a preset"),
    "serve": ("aeroseg.cli.serve", "a map in the browser: segment GeoTIFFs with any class list"),
    "convert": ("aeroseg.cli.convert", "turn a CAT-Seg / OVRS checkpoint into an AerOSeg checkpoint"),
    "demo": (
        "aeroseg.cli.demo",
        "segment a public sample aerial image with the training-free model",
    ),
}


def version() -> str:
    """The package's version (``aeroseg.__version__``; importlib.metadata would add 0.1 s to every start)."""
    from aeroseg import __version__

    return __version__


def build_parser(commands: dict[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    """The parser of ``aeroseg``; only the sub-commands in ``commands`` (default: all) get their arguments
    (and are imported), the others are listed by name and help text."""
    parser = argparse.ArgumentParser(
        prog="aeroseg", description="Open-vocabulary segmentation of aerial images."
    )
    parser.add_argument("--version", action="version", version=f"aeroseg {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if commands is None or name in commands:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the verb ``argv`` names; its exit status. A reader of stdout that leaves early (``aeroseg presets
    | head -1``) ends any verb quietly, also when it leaves before the last buffered line is written."""
    try:
        try:
            return _main(sys.argv[1:] if argv is None else argv)
        finally:
            sys.stdout.flush()  # here, not at exit: a closed pipe is caught below
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def _main(argv: list[str]) -> int:
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser({command: COMMANDS[command]} if command in COMMANDS else {})
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    options.quiet_libraries(bool(getattr(args, "quiet", False)))
    try:
        with _terminate_like_interrupt():
            return int(args._run(args) or 0)
    except UserError as error:
        print(f"aeroseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"aeroseg {args.command}: interrupted", file=sys.stderr)
        return 128 + stop.signum if isinstance(stop, Terminated) else 130


@contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread while a verb runs, so its
    temporary files are removed as after Ctrl+C; a second SIGTERM during that clean-up is ignored. The
    previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
