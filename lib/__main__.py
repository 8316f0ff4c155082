"""``python -m lib <command>``: the command line for everything that is not the server.

Argument parsing and dispatch only. Each command lives in its own module that
defines ``configure(parser)`` (add its arguments) and ``main(args) -> int``;
modules are imported only when their command runs, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lib.errors import LorisError

# name -> (module, one-line help). The module's docstring is the command's long help.
COMMANDS: dict[str, tuple[str, str]] = {
    "sample-data": ("lib.data.cli_sample", "generate synthetic knee-ultrasound images in the flat layout"),
    "import": ("lib.data.cli_import", "import a flat or reference-layout dataset into a MONAI Label datastore"),
    "train": ("lib.loris.cli_train", "train a LoRIS model on normal images"),
    "infer": ("lib.pipeline.cli", "run LoRIS on one image: reconstruction, anomaly map, score, mask"),
    "train-detector": ("lib.detection.cli_train", "train the recess box detector on normal images"),
    "detect": ("lib.detection.cli_detect", "propose the recess box of one image"),
    "evaluate": ("lib.evaluation.cli", "cross-validated evaluation with baselines and a report"),
    "bench": ("lib.bench", "measure latency and throughput against the machine's limit"),
}
DATA_PARALLEL = ("train", "train-detector")
"""The commands that train data-parallel when launched as several processes (``torchrun --nproc_per_node N``);
the others run in one process and refuse such a launch (each process would write the same files)."""


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        if name != wanted:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(
            name,
            help=help_text,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(cmd)
        cmd.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        if "WORLD_SIZE" in os.environ and args.command not in DATA_PARALLEL:
            from lib.training.distributed import launched  # imports torch: only under a launcher

            if launched():
                raise LorisError(f"python -m lib {args.command} runs in one process; launch it without torchrun "
                                 f"(torchrun trains data-parallel with: {', '.join(DATA_PARALLEL)})")
        return int(args._main(args) or 0)
    except LorisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
