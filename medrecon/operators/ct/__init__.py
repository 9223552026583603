"""Computed tomography: 2D parallel- and fan-beam ray transforms, FBP, and 3D cone beam (GPU only).

The package, split as ODL's ``tomo``: ``geometry`` (arguments, angles, the 2D geometry record),
``backends`` (one object per backend behind one interface), ``matrix_cache`` (system matrices on
disk), ``fbp`` (filters and the two FBPs), ``parallel_fan`` (``ParallelBeamCT``, ``FanBeamCT``),
``cone`` (``ConeBeamCT``) and ``_astra`` (the FP/BP setup shared by 2D and 3D).

``ParallelBeamCT`` / ``FanBeamCT`` map an image ``(B, C, N, N)`` to a sinogram
``(B, C, n_angles, n_detectors)``; ``op.fbp(y)`` is filtered back-projection in torch (also ``op.direct(y)``).

Geometry and scaling (one convention, shared by every backend)
--------------------------------------------------------------
* **Pixel units.** The ``N x N`` image is centred on the origin and its pixels have side 1. ``x``
  grows with the column index, ``y`` grows *upwards*: pixel ``(row r, column c)`` has its centre at
  ``(c - (N-1)/2, (N-1)/2 - r)``. This is ASTRA's 2D volume convention (``astra.create_vol_geom(N, N)``).
* **Angles** ``theta`` in radians, counter-clockwise. Parallel beam: the ray of angle ``theta`` and
  detector coordinate ``u`` is the line ``x cos(theta) + y sin(theta) = u``; at ``theta = 0`` the
  rays run along the columns (``u = x``), at ``theta = pi/2`` along the rows (``u = y``). For odd
  ``N`` this is exactly ``skimage.transform.radon(image, theta=degrees(angles), circle=False).T``
  up to the interpolation kernel; for even ``N`` scikit-image rotates about pixel ``N//2`` rather
  than the image centre (half a pixel apart).
  Defaults: parallel ``theta_i = i pi / n_angles``; fan ``theta_i = 2 pi i / n_angles``.
* **Detector.** Bin ``k`` (``0 <= k < n_detectors``) has its centre at ``u_k = (k - (n_det-1)/2) * d``.
  Parallel beam: ``d = 1`` pixel. Fan beam: the source sits at ``R_s (sin theta, -cos theta)``, the
  flat detector passes through ``R_d (-sin theta, cos theta)`` along ``(cos theta, sin theta)``, and
  its bins are ``d = (R_s + R_d) / R_s`` (the magnification) wide, i.e. 1 pixel at the rotation
  centre. (ASTRA ``fanflat`` with ``source_origin = R_s``, ``origin_det = R_d``.)
  Default ``n_detectors``: the smallest count with the parity of ``N`` that sees the whole image
  (parallel: ``>= sqrt(2) N``; fan: every ray through the circle circumscribing the image).
* **Values.** A sinogram entry approximates the line integral ``int f dl`` with lengths in pixels:
  an image that is 1 everywhere gives chord lengths in pixels. Every projector kernel
  (``linear`` = Joseph, ``line``, ``strip``; fan ``line_fanflat``, ``strip_fanflat``) has this
  scale, and the ``"astra"``, ``"odl"`` and ``"matrix"`` backends apply the *same* ASTRA kernel,
  so they agree to float32 rounding (tested).
* **Adjoint.** ``op.adjoint`` is the exact transpose of the projector's matrix (ASTRA's CPU
  back-projectors are matched; the ``"matrix"`` backend applies the stored transpose).

Backends (``backend=``)
-----------------------
* ``"matrix"``: the sparse system matrix of the ASTRA projector (``astra.projector.matrix``), built
  once per geometry and cached on disk as ``$MEDRECON_CACHE/ct/<sha256>.npz`` (default
  ``~/.cache/medrecon/ct``; written atomically, loaded without pickle), kept as CSR and CSR
  transpose (float values, int32 indices) and applied as one torch sparse matmul per batch, on
  any device, with ``.to(device, dtype)``.
* ``"astra"``: ASTRA's 2D projectors called directly, one FP/BP algorithm pair and linked buffers
  created once per operator and reused for every image (CPU, single-threaded). ``projector="cuda"``
  uses ASTRA's CUDA FP/BP (GPU only; its back-projection is not an exact transpose).
* ``"odl"``: ``odl.applications.tomo.RayTransform(impl="astra_cpu")`` with the same kernel.
* ``"auto"`` (default): ``"matrix"`` when the estimated matrix memory (CSR + transpose) is at most
  ``MATRIX_AUTO_MAX_BYTES`` (1 GiB, or ``$MEDRECON_CT_MATRIX_MAX_BYTES``), else ``"astra"``.
  128x128/30 angles (Joseph): ~14 MB; 256x256/180: ~340 MB; 512x512/720: ~5.6 GB (-> astra).

FBP
---
``op.fbp(y, filter, frequency_scaling)``: zero-padded FFT filtering along the detector axis (the
band-limited ramp of Kak & Slaney, *Principles of Computerized Tomographic Imaging*, 1988,
eq. 3.61, times a window), then back-projection. Parallel beam uses the operator's own adjoint with
the constant ``d * dtheta`` (``f(x) = sum_i w_i (h * p_i)(x . theta_i)``), so a Shepp-Logan phantom is
recovered in absolute scale. Fan beam is the weighted flat-detector fan-beam FBP (Kak & Slaney
eqs. 3.116-3.118: cosine pre-weighting, ramp filter on the detector scaled to the rotation centre,
distance-weighted ``1/U^2`` back-projection by linear interpolation, written in torch), which
assumes a full ``2 pi`` scan (no Parker weights for short scans). Angle weights ``w_i`` are half
the distance to the neighbouring angles (modulo ``pi`` / ``2 pi``), each gap capped at the median
gap, so limited-angle sets are not over-weighted at their ends. Windows (ODL's ``fbp_op``
definitions, ``f`` the frequency over Nyquist, ``s = frequency_scaling``, zero above ``f > s``):
ramp ``1``; shepp-logan ``sinc(f / 2s)``; cosine ``cos(pi f / 2s)``; hann ``cos^2(pi f / 2s)``.

3D cone beam (``ConeBeamCT``) runs ASTRA's CUDA FP3D/BP3D only; its constructor checks for a GPU
before any ASTRA 3D call (ASTRA 3D terminates the process on a machine without one).
"""

from .backends import BACKENDS, AstraBackend, Backend, MatrixBackend, OdlBackend
from .cone import ConeBeamCT
from .fbp import FBP_FILTERS
from .matrix_cache import MATRIX_AUTO_MAX_BYTES, ct_cache_dir
from .parallel_fan import FanBeamCT, ParallelBeamCT

__all__ = [
    "ParallelBeamCT",
    "FanBeamCT",
    "ConeBeamCT",
    "MATRIX_AUTO_MAX_BYTES",
    "FBP_FILTERS",
    "ct_cache_dir",
    "Backend",
    "MatrixBackend",
    "AstraBackend",
    "OdlBackend",
    "BACKENDS",
]
