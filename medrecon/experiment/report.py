"""What an experiment writes and prints: the metrics table, the figure, progress bars, provenance."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np

__all__ = [
    "MethodProgress",
    "MethodStatus",
    "format_table",
    "previous_method_seconds",
    "save_figure",
    "save_h5",
    "versions",
    "write_metrics_csv",
]

METRIC_FIELDS = ["image", "method", "psnr", "ssim", "nmse", "seconds"]
VOLUME_FIELDS = ["volume", "method", "slices", "psnr", "ssim", "nmse"]


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on (for ``run.json``)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in (
        "medrecon",
        "torch",
        "numpy",
        "scipy",
        "scikit-image",
        "pydicom",
        "h5py",
        "astra-toolbox",
        "odl",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class MethodStatus:
    """One stderr line per method: ``method k/N: title ...`` before it runs, and after it its time, the
    elapsed time and an estimate of what is left. The estimate adds, for each method still to run, its
    time in the previous run into the same output folder (``expected``, from that run's ``run.json``)
    or else the mean time of the methods done so far; ``method_seconds`` collects this run's times."""

    def __init__(self, titles: list[str], enabled: bool, expected: dict[str, float] | None = None) -> None:
        import time

        self.titles, self.enabled, self.clock = titles, enabled, time.perf_counter
        self.expected = dict(expected or {})
        self.method_seconds: dict[str, float] = {}
        self.t0 = self.clock()
        self.t_method = self.t0

    def start(self, k: int, title: str) -> None:
        self.t_method = self.clock()
        if self.enabled:
            print(f"method {k}/{len(self.titles)}: {title} ...", file=sys.stderr, flush=True)

    def done(self, k: int, title: str) -> None:
        now = self.clock()
        self.method_seconds[title] = round(now - self.t_method, 3)
        if not self.enabled:
            return
        elapsed = now - self.t0
        rest = self.titles[k:]
        mean = elapsed / k
        left = sum(self.expected.get(t, mean) for t in rest)
        known = rest and all(t in self.expected for t in rest)
        basis = "previous run" if known else "a rough guess: the mean so far"
        estimate = f", about {_duration(left)} left ({basis})" if rest else ""
        print(
            f"method {k}/{len(self.titles)}: {title} took {_duration(now - self.t_method)} "
            f"(elapsed {_duration(elapsed)}{estimate})",
            file=sys.stderr,
            flush=True,
        )


def previous_method_seconds(out_dir: Path) -> dict[str, float]:
    """``method_seconds`` of the run already in ``out_dir`` (empty when there is none or it is unreadable)."""
    import json

    try:
        data = json.loads((Path(out_dir) / "run.json").read_text())
        return {str(k): float(v) for k, v in data.get("method_seconds", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


class MethodProgress:
    """A tqdm bar fed by a method's callback (one tick per solver iteration)."""

    def __init__(self, title: str, total: int | None, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=f"{title:>14s}", unit="it", leave=False, file=sys.stderr, dynamic_ncols=True
            )

    def __call__(self, k, x, info) -> None:
        if self.bar is not None:
            self.bar.update(1)
            res = info.get("residual") if isinstance(info, dict) else None
            if res is not None and k % 10 == 0:
                self.bar.set_postfix(residual=f"{float(res.float().mean()):.3g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_table(rows: list[dict], titles: list[str]) -> str:
    """The printed table: mean ± std over the images of PSNR, SSIM, NMSE and seconds, one line per method."""
    head = f"{'method':<14s} {'PSNR [dB]':>15s} {'SSIM':>15s} {'NMSE':>19s} {'seconds':>9s}"
    lines = [head, "-" * len(head)]
    for t in titles:
        r = [row for row in rows if row["method"] == t]
        if not r:
            continue

        def ms(key: str, r: list = r) -> tuple[float, float]:  # None (no ground truth) prints as nan
            v = np.array([np.nan if row[key] is None else row[key] for row in r], dtype=np.float64)
            return float(v.mean()), float(v.std())

        p, s, n, sec = ms("psnr"), ms("ssim"), ms("nmse"), ms("seconds")
        lines.append(
            f"{t:<14s} {p[0]:7.2f} ± {p[1]:5.2f} {s[0]:7.4f} ± {s[1]:5.3f} "
            f"{n[0]:9.2e} ± {n[1]:7.1e} {sec[0]:9.3f}"
        )
    return "\n".join(lines)


def write_metrics_csv(path: Path, rows: list[dict], fields: list[str] = METRIC_FIELDS) -> None:
    """``image,method,psnr,ssim,nmse,seconds`` (or ``fields``; 6 significant digits), atomically."""
    from ..utils_io import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def save_figure(
    path: Path,
    names: list[str],
    truth: np.ndarray | None,
    panels: list[tuple[str, np.ndarray, list[float]]],
    max_images: int,
) -> None:
    """Ground truth, every method with its PSNR, and the absolute error maps (one row pair per image).
    ``truth=None`` (measured data without a ground truth): one row of reconstructions per image."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n_img = min(len(names), max_images)
    if truth is None:
        _save_figure_without_truth(path, names[:n_img], panels)
        return
    n_col = 1 + len(panels)
    fig, axes = plt.subplots(2 * n_img, n_col, figsize=(1.9 * n_col, 2.0 * 2 * n_img), squeeze=False)
    for i in range(n_img):
        ax = axes[2 * i, 0]
        ax.imshow(truth[i], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{names[i][:18]}\nground truth", fontsize=7)
        axes[2 * i + 1, 0].axis("off")
        err_max = max(float(np.abs(rec[i] - truth[i]).max()) for _, rec, _ in panels) or 1.0
        for j, (title, rec, psnrs) in enumerate(panels, start=1):
            ax = axes[2 * i, j]
            ax.imshow(rec[i], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{title}\n{psnrs[i]:.2f} dB", fontsize=7)
            axes[2 * i + 1, j].imshow(np.abs(rec[i] - truth[i]), cmap="magma", vmin=0, vmax=err_max)
            axes[2 * i + 1, j].set_title("|error|", fontsize=6)
    _save_and_close(fig, axes, path)


def _save_figure_without_truth(
    path: Path, names: list[str], panels: list[tuple[str, np.ndarray, list]]
) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(names), len(panels), figsize=(1.9 * len(panels), 2.0 * len(names)), squeeze=False
    )
    for i, name in enumerate(names):
        for j, (title, rec, _) in enumerate(panels):
            top = float(np.percentile(rec[i], 99.5)) or 1.0  # no ground truth: each panel on its own scale
            axes[i, j].imshow(rec[i], cmap="gray", vmin=0, vmax=top)
            axes[i, j].set_title(f"{name[:18]}\n{title}" if j == 0 else title, fontsize=7)
    _save_and_close(fig, axes, path)


def _save_and_close(fig, axes, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ..utils_io import atomic_write

    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=80))
    plt.close(fig)


def save_h5(rec_dir: Path, records: list, names: list[str], mags: dict[int, np.ndarray]) -> list[dict]:
    """fastMRI's leaderboard layout: one file per volume, dataset ``reconstruction`` ``(slices, H, W)``
    float32 magnitudes on the scale of the volume's own target. Slices of a ``fastmri`` source go into
    ``<input file name>`` (in slice order); every other image is a volume of one slice, ``<image>.h5``.
    ``mags``: image index -> ``(H, W)`` magnitude already on the file scale.

    Returns one row per volume whose slices all have a ground truth, ``volume, slices, psnr, ssim,
    nmse`` computed as ``fastmri.evaluate`` does (on the file scale, one data range: the volume's
    maximum; SSIM averaged over slices), so that its ``evaluate`` on ``rec_dir`` gives these numbers."""
    from .. import metrics
    from ..data.fastmri import save_reconstructions

    volumes: dict[str, list[tuple[int, int]]] = {}  # file name -> [(slice, image index)]
    for i in sorted(mags):
        rec = records[i]
        if rec.kind == "fastmri" and rec.source is not None:
            volumes.setdefault(rec.source.name, []).append((rec.slice_index, i))
        else:
            volumes[f"{names[i]}.h5"] = [(0, i)]
    rec_dir.mkdir(parents=True, exist_ok=True)
    order = {fname: [i for _, i in sorted(parts)] for fname, parts in volumes.items()}
    stacked = {fname: np.stack([mags[i] for i in idx]) for fname, idx in order.items()}
    save_reconstructions(stacked, rec_dir)
    rows = []
    for fname, idx in order.items():
        if any(records[i].image is None for i in idx):
            continue  # measured data without a target
        target = np.stack(
            [records[i].image.astype(np.float64) * records[i].scale + records[i].offset for i in idx]
        )
        pred = stacked[fname].astype(np.float64)
        rows.append(
            {
                "volume": fname,
                "slices": len(idx),
                "psnr": metrics.psnr(target, pred),
                "ssim": metrics.ssim(target, pred),
                "nmse": metrics.nmse(target, pred),
            }
        )
    return rows
