"""The ``aeroseg`` command line: one sub-command per job, each in its own module.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Errors the user can fix
are raised as :class:`aeroseg.errors.UserError` and printed as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from aeroseg.errors import UserError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "presets": ("aeroseg.commands.presets", "list the model presets"),
    "prepare": ("aeroseg.data.prepare", "prepare iSAID, DLRSD or OpenEarthMap from the official downloads"),
    "train": ("aeroseg.training.command", "train a model on a prepared dataset"),
    "evaluate": ("aeroseg.evaluation.command", "score a model or a folder of predictions (s/u/h-mIoU)"),
    "report": ("aeroseg.evaluation.report", "print the paper's tables from evaluation JSON files"),
    "predict": ("aeroseg.predict.command", "segment images or GeoTIFFs of any size"),
    "bench": ("aeroseg.bench", "measure speed, FLOPs and memory of a preset"),
    "convert": ("aeroseg.commands.convert", "turn a CAT-Seg / OVRS checkpoint into an AerOSeg checkpoint"),
    "demo": (
        "aeroseg.training_free.demo",
        "segment a public sample aerial image with the training-free model",
    ),
}


def build_parser(available: dict[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aeroseg", description="Open-vocabulary segmentation of aerial images."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in (available or COMMANDS).items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and error.name.startswith("aeroseg"):
                continue  # command not part of this installation
            raise
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = COMMANDS
    if argv and argv[0] in COMMANDS:  # import only the command that runs
        commands = {argv[0]: COMMANDS[argv[0]]}
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        build_parser().print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as error:
        print(f"aeroseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aeroseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
