"""``medrecon`` command line: ``reconstruct`` (an experiment from a YAML config) and ``train``.

    medrecon reconstruct CONFIG.yaml [--set key=value ...] [--out DIR] [--overwrite] [--quiet]
    medrecon train CONFIG.yaml [--set key=value ...] [--out DIR] [--resume]

Several processes or machines: the same command under ``torchrun`` (nothing else changes), e.g.
``torchrun --standalone --nproc_per_node=4 -m medrecon.cli.main train CONFIG.yaml``; ``train``
runs DistributedDataParallel with ``train.batch_size`` as the global batch, ``reconstruct`` shards
the images over the ranks (see ``medrecon.distributed`` and the README).

Also runnable as ``python -m medrecon.cli.main``. ``main(argv)`` returns the exit code: 0 on success,
2 for a bad config, bad image source or an existing output directory (one-line message, no
traceback), 1 when a method fails while running. Heavy imports happen inside the commands.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medrecon", description="Medical-image reconstruction (CT, MRI).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{reconstruct,train}")

    rec = sub.add_parser("reconstruct", help="simulate measurements and run reconstruction methods from a config",
                         description="Simulate measurements of the config's images and reconstruct them with "
                                     "each listed method; write metrics.csv, summary.txt, figure.png, recon/.")
    rec.add_argument("config", help="experiment YAML (see configs/ct_sparse_angle_30.yaml)")
    rec.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set operator.n_angles=10 "
                          "--set methods.tv.options.lam=0.02 --set images.0.path=my.npy (repeatable)")
    rec.add_argument("--out", type=Path, default=None, help="output directory (default: outputs/<config name>)")
    rec.add_argument("--overwrite", action="store_true",
                     help="write into an existing output directory (replaces result files; deletes nothing else)")
    rec.add_argument("--quiet", action="store_true", help="no progress bars")

    tr = sub.add_parser("train", help="train a prior from a training config (medrecon.training)")
    tr.add_argument("config", help="training YAML (configs/train_*.yaml)")
    tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    tr.add_argument("--out", type=Path, default=None, help="run directory")
    tr.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --out")
    return parser


def _error(message: str) -> None:
    print(f"medrecon: error: {message}", file=sys.stderr)


def _reconstruct(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from medrecon.config import ConfigError
    from medrecon.data.dicom import DicomError
    from medrecon.data.images import ImageLoadError
    from medrecon.experiment import (ExperimentError, OutputExistsError, check_output_dir,
                                     load_experiment_config, run_experiment)

    try:
        cfg = load_experiment_config(args.config, args.overrides)
        out = args.out if args.out is not None else Path("outputs") / cfg.name
        check_output_dir(out, args.overwrite)  # refuse before any work
        run_experiment(cfg, out, overwrite=args.overwrite, progress=not args.quiet,
                       command=["medrecon", *argv])
    except (ConfigError, ImageLoadError, DicomError, OutputExistsError) as exc:
        _error(" ".join(str(exc).split()))
        return EXIT_USAGE
    except ExperimentError as exc:
        _error(str(exc))
        return EXIT_FAILED
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    try:
        from medrecon.training.run import train_from_config
    except ImportError as exc:
        _error(f"training is not available: medrecon.training.run.train_from_config cannot be imported ({exc})")
        return EXIT_USAGE
    from medrecon.config import ConfigError

    try:
        return int(train_from_config(args.config, list(args.overrides), args.out, args.resume) or 0)
    except ConfigError as exc:
        _error(" ".join(str(exc).split()))
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    if args.command == "reconstruct":
        return _reconstruct(args, argv)
    return _train(args)


if __name__ == "__main__":
    sys.exit(main())
