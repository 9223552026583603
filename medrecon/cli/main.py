"""``medrecon`` command line: ``reconstruct`` (an experiment from a YAML config) and ``train``.

    medrecon reconstruct CONFIG.yaml [--set key=value ...] [--out DIR] [--overwrite] [--quiet]
    medrecon train CONFIG.yaml [--set key=value ...] [--out DIR] [--resume] [--replace-weights]
    medrecon --version

Several processes or machines: the same command under ``torchrun`` (nothing else changes), e.g.
``torchrun --standalone --nproc_per_node=4 -m medrecon.cli.main train CONFIG.yaml``; ``train``
runs DistributedDataParallel with ``train.batch_size`` as the global batch, ``reconstruct`` shards
the images over the ranks (see ``medrecon.distributed`` and the README).

Also runnable as ``python -m medrecon.cli.main``. ``main(argv)`` returns the exit code: 0 on success,
2 for a bad config, bad image source, an existing output or run folder (everything checked before
the first method or training step runs), 1 when a method or training fails while running, 130 when
interrupted (SIGINT/SIGTERM; ``train`` writes a checkpoint first). Every error is one line on
stderr, ``medrecon: error: ...``; ``--debug`` (before the command) shows the traceback instead.
Heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _version() -> str:
    from medrecon import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medrecon", description="Medical-image reconstruction (CT, MRI).")
    parser.add_argument("--version", action="version", version=f"medrecon {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads (default: MEDRECON_THREADS, OMP_NUM_THREADS, else the available cores "
        "shared among torchrun's local processes; see medrecon.runtime)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{reconstruct,train}")

    rec = sub.add_parser(
        "reconstruct",
        help="simulate measurements and run reconstruction methods from a config",
        description="Simulate measurements of the config's images and reconstruct them with "
        "each listed method; write metrics.csv, summary.txt, figure.png, recon/.",
    )
    rec.add_argument("config", help="experiment YAML (see configs/ct_sparse_angle_30.yaml)")
    rec.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (YAML syntax; repeatable), e.g. --set operator.n_angles=10 "
        "--set methods.tv.options.lam=0.02 --set 'images=[{kind: npy, path: my.npy}]'",
    )
    rec.add_argument(
        "--out", type=Path, default=None, help="output directory (default: outputs/<config name>)"
    )
    rec.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results in an existing output directory once the new run is complete "
        "(other files there are kept)",
    )
    rec.add_argument("--quiet", action="store_true", help="no progress output")

    tr = sub.add_parser("train", help="train a prior from a training config (medrecon.training)")
    tr.add_argument("config", help="training YAML (configs/train_*.yaml)")
    tr.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=1",
    )
    tr.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<config stem>)")
    tr.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --out")
    tr.add_argument(
        "--replace-weights",
        action="store_true",
        help="let the final export replace an existing weights file (output.weights)",
    )
    return parser


def _error(message: str) -> None:
    print(f"medrecon: error: {' '.join(str(message).split())}", file=sys.stderr)


def _reconstruct(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from medrecon.config import ConfigError
    from medrecon.data.dicom import DicomError
    from medrecon.data.images import ImageLoadError
    from medrecon.experiment import (
        ExperimentError,
        OutputExistsError,
        check_output_dir,
        load_experiment_config,
        run_experiment,
    )

    out = args.out
    try:
        cfg = load_experiment_config(args.config, args.overrides)
        out = args.out if args.out is not None else Path("outputs") / cfg.name
        check_output_dir(out, args.overwrite)  # refuse before any work
        run_experiment(
            cfg, out, overwrite=args.overwrite, progress=not args.quiet, command=["medrecon", *argv]
        )
    except (ConfigError, ImageLoadError, DicomError, OutputExistsError) as exc:
        _error(exc)
        return EXIT_USAGE
    except ExperimentError as exc:
        _error(exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error(
            f"interrupted: {out if out is not None else 'the output folder'} is unchanged "
            "(results are moved into place only when a run completes)"
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from medrecon.config import ConfigError
    from medrecon.training.fit import TrainingInterrupted
    from medrecon.training.run import train_from_config

    try:
        return int(
            train_from_config(
                args.config, list(args.overrides), args.out, args.resume, replace_weights=args.replace_weights
            )
            or 0
        )
    except ConfigError as exc:
        _error(exc)
        return EXIT_USAGE
    except TrainingInterrupted as exc:
        if exc.checkpoint is None:
            _error(f"interrupted ({exc.signal_name}) at step {exc.step}; no checkpoint was written")
        else:
            folder = exc.checkpoint.parent
            command = " ".join(
                [
                    "medrecon",
                    "train",
                    str(args.config),
                    *(f"--set {o}" for o in args.overrides),
                    "--out",
                    str(folder),
                    "--resume",
                ]
            )
            _error(
                f"interrupted ({exc.signal_name}) at step {exc.step}: checkpoint {exc.checkpoint} written; "
                f"continue with: {command}"
            )
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _error(
            "interrupted inside a training step: the last periodic checkpoint (if any) is intact; "
            "continue with --resume"
        )
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help/--version (0) and on usage errors (2)
        return int(exc.code or 0)
    from medrecon.runtime import configure_threads

    try:
        choice = configure_threads(args.threads)
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    print(f"medrecon: using {choice}")
    try:
        if args.command == "reconstruct":
            return _reconstruct(args, argv)
        return _train(args)
    except Exception as exc:
        if args.debug:
            raise
        _error(
            f"{type(exc).__name__}: {exc} (this is a bug or an unchecked input; "
            "run with medrecon --debug ... for the traceback)"
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
