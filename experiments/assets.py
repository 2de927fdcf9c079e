"""Where the experiments find the read-only assets that sit beside the repository (`../shared`).

One place to change if they move: the scripts under experiments/ import these names instead of spelling
the paths out. The product never reads them; only experiments, benchmarks and tests do.
"""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

CIFAR_TEST = SHARED / "data/cifar10/test.npz"
CIFAR_TRAIN = SHARED / "data/cifar10/train-jpeg.tar"
IMAGENET_SAMPLE = SHARED / "data/imagenet-sample"

# checkpoints the zoo does not ship: the BN CIFAR-10 ResNets and torchvision's ImageNet MobileNetV2
CIFAR_RESNETS = {f"cifar10-resnet{d}": SHARED / f"models/cifar10/resnet{d}.th" for d in (20, 32, 44)}
MOBILENET_V2 = SHARED / "models/imagenet/mobilenet_v2-b0353104.pth"
WEIGHTS = {**CIFAR_RESNETS, "mobilenet-v2": MOBILENET_V2}
# nets trained by committed scripts and not shipped (experiments/deeper_resnet.py has the command)
TRAINED_HERE = {"cifar10-resnet56": ROOT / "runs" / "cifar10-resnet56-bn.pt"}


def cifar_checkpoint(name: str) -> str | None:
    """Where a CIFAR net's weights are when the zoo does not ship them: ../shared or runs/ (None: the zoo's)."""
    path = {**CIFAR_RESNETS, **TRAINED_HERE}.get(name)
    return str(path) if path is not None else None


def every_class(images, n: int):
    """`n` images taken at an even stride through a set stored class by class, so that "real images" statistics see
    every class: CIFAR-10's test.npz holds its 1000 airplanes first, so its first 256 images are one class."""
    return images[::max(1, len(images) // n)][:n]


def load_zoo_model(name: str):
    """A zoo model by name, with its checkpoint from ../shared where the zoo does not ship one."""
    import gzsq
    return gzsq.load_model(name, str(WEIGHTS[name]) if name in WEIGHTS else None)


def write_table_readme(path: Path, table: str) -> None:
    """A results README made of a generated table and hand-written findings: the table replaces the part above
    the "## Findings" heading, the findings are kept."""
    from gzsq.atomic import atomic_write_text
    text = path.read_text() if path.exists() else ""
    findings = text[text.index("## Findings"):] if "## Findings" in text else ""
    atomic_write_text(path, table + ("\n" + findings if findings else ""))


def short_commit() -> str:
    """The checkout's commit, recorded beside each result."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
