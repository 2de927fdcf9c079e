"""FP32 top-1 of the shipped `cifar10-vgg7-nf` on the CIFAR-10 test set, as gzsq loads and runs it.

    python experiments/vgg_fp32_top1.py --threads 1

Loads the model by name (the weights in src/gzsq/models/weights/), preprocesses with its
InputSpec, predicts with `gzsq.metrics.predict` and writes the number of correct predictions
on the first 1000 and on all 10 000 test images to results/vgg_fp32_top1.txt (the command on
its first line). tests/test_vgg_nf.py checks the first-1000 count.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from gzsq.atomic import atomic_write_text
from gzsq.data import load_dataset
from gzsq.metrics import predict
from gzsq.models import load_model

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/cifar10/test.npz"))
    p.add_argument("--out", type=Path, default=ROOT / "results/vgg_fp32_top1.txt")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    model = load_model("cifar10-vgg7-nf")
    data = load_dataset(args.data)
    images = model.input_spec.to_tensor(data.images(range(len(data))))
    pred = predict(model, images)
    right = pred == np.asarray(data.labels)
    lines = [f"# {command}",
             f"model cifar10-vgg7-nf, FP32, {Path(args.data).name}",
             f"first 1000 test images: {int(right[:1000].sum())} correct ({100 * right[:1000].mean():.2f} %)",
             f"all {len(right)} test images: {int(right.sum())} correct ({100 * right.mean():.2f} %)"]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
