"""The reconstruction experiment behind ``medrecon reconstruct CONFIG.yaml``.

Modules: :mod:`~medrecon.experiment.config` (the schema), :mod:`~medrecon.experiment.build` (operator,
simulated measurements, seeds), :mod:`~medrecon.experiment.run` (the run, distributed over ranks),
:mod:`~medrecon.experiment.report` (table, figure, files).

A config (YAML -> :class:`ExperimentConfig`, strict) names the images, the forward operator with its
noise, the methods with their options, and a seed. :func:`run_experiment` simulates the
measurements, runs every method on each image, and writes into the output directory:

* ``recon/<method>/<image>.npy``: each reconstruction ``(H, W)`` (complex for MRI);
* ``recon/<method>/<volume>.h5`` (MRI only): fastMRI's leaderboard layout, one file per input volume
  (the input file's name) holding ``reconstruction`` ``(slices, H, W)`` float32 magnitudes on the scale
  of that file's own target (ground truth ``image * scale``, see :mod:`medrecon.data.images`), so that
  ``fastmri.evaluate`` run on ``recon/<method>/`` against the data folder works; images that are not
  from a fastMRI file are a volume of one slice, ``<image>.h5``;
* ``metrics.csv``: ``image,method,psnr,ssim,nmse,seconds`` (metrics on magnitudes against the
  ground truth, ``data_range = max(ground truth)`` as in fastMRI; ``seconds`` is the method's wall
  time for the whole batch divided by the number of images);
* ``summary.txt``: the printed table (mean and standard deviation over images, per method);
* ``figure.png``: ground truth, the baseline (FBP for CT, zero-filled for MRI), every method with its
  PSNR, and the absolute error maps;
* ``config.yaml`` (the resolved config) and ``run.json`` (seed, git revision, package versions, command,
  and the notes of what the image rule changed: resizing, renaming, min-max mapping).

Everything is built in a sibling folder ``.<out>.medrecon-tmp`` and moved into place when complete:
an interrupted or failed run leaves the output folder as it was (with ``--overwrite``, the complete
old run; the user's other files in it are kept).

Several processes: ``torchrun --nproc_per_node=N -m medrecon.cli.main reconstruct CONFIG`` shards
the images over the ranks (image ``i`` on rank ``i % N``); each rank writes its own ``recon/`` files,
rank 0 gathers the rows (``torch.distributed.all_gather_object``) and writes ``metrics.csv`` (same
rows, same order as one process), ``summary.txt``, ``figure.png``, ``config.yaml`` and ``run.json``.
A failure on any rank (bad image, failing method) is raised on every rank. The results equal a
single-process run's because nothing depends on which images share a batch: each image's noise
comes from its own generator seeded with ``image_seed(seed, name, "noise")``, and every method runs
image by image (a batched solver may stop when its whole batch has converged, which would tie an
image's result to the others); random methods (those with a ``generator`` option) get a generator
seeded by ``image_seed(seed, name, "method")``.

Noise model (``operator.noise_level = r``): ``y = A x + n`` with ``n`` white Gaussian of standard
deviation ``sigma = r * mean(|A x|)`` per image, the mean taken over the measurement entries in the
range of ``A`` (all sinogram entries for CT; the sampled k-space entries for MRI). For complex
(MRI) data the real and imaginary parts each get standard deviation ``sigma``. This ``sigma`` is what
``lam: discrepancy`` uses as ``noise_std`` unless the method's options give one.
"""

from __future__ import annotations

from .build import build_operator, image_seed, load_config_images, simulate
from .config import (
    CTOperatorSpec,
    ExperimentConfig,
    ExperimentError,
    ImageSpec,
    MethodSpec,
    MRIOperatorSpec,
    OperatorSpec,
    OutputExistsError,
    load_experiment_config,
    validate_methods,
)
from .run import check_output_dir, run_experiment

__all__ = [
    "CTOperatorSpec",
    "ExperimentConfig",
    "ExperimentError",
    "ImageSpec",
    "MRIOperatorSpec",
    "MethodSpec",
    "OperatorSpec",
    "OutputExistsError",
    "build_operator",
    "load_config_images",
    "check_output_dir",
    "image_seed",
    "load_experiment_config",
    "run_experiment",
    "simulate",
    "validate_methods",
]
