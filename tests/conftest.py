"""Shared fixtures: a tiny CNN that builds in milliseconds, and paths to ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gzsq.models.spec import InputSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RESNET20 = SHARED / "models/cifar10/resnet20.th"
CIFAR_TEST = SHARED / "data/cifar10/test.npz"
CIFAR_TRAIN = SHARED / "data/cifar10/train-jpeg.tar"
IMAGENET = SHARED / "data/imagenet-sample"


class TinyNet(nn.Module):
    """conv-BN-ReLU, a residual block with an add, global pool, linear head."""

    def __init__(self, norm: bool = True):
        super().__init__()
        bn = (lambda c: nn.BatchNorm2d(c)) if norm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=not norm)
        self.bn1 = bn(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=not norm)
        self.bn2 = bn(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)) + x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def make_tiny(norm: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = TinyNet(norm)
    if norm:  # non-trivial running statistics so folding has something to do
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    net.input_spec = InputSpec(size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    net.gzsq_name = "tiny"
    return net


@pytest.fixture
def tiny():
    return make_tiny()


def needs(path: Path):
    """Shared assets are part of the test environment; their absence is a failure, not a skip."""
    assert path.exists(), f"missing shared asset {path} (tests read ../shared beside the repo)"
    return path


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The suite runs torch on one intra-op thread per worker (pyproject runs two workers). On a 2-core
    machine with other jobs running, torch's second thread mostly spins: the whole suite took 8 min with two
    threads and 1 min 42 s with one (same commit, same load, one worker)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def idle_cpu(monkeypatch):
    """The CLI's busy-CPU note depends on the machine's load; in-process tests see an idle CPU
    unless they patch `os.getloadavg` themselves."""
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0), raising=False)
