"""Train the BatchNorm-free CIFAR-10 ResNets that ship as `cifar10-resnet20-nf` and `cifar10-resnet32-nf`.

What: `gzsq.models.resnet_cifar.CifarResNet(20, norm=False)` -- the exact
ResNet-20 graph with biased convs, no normalization layer at all, option-A
(parameter-free) shortcuts -- trained from scratch on the 50 000 CIFAR-10
training images. Nothing is added to the parameterization, so the checkpoint is
a plain state_dict that `gzsq.models.load_model("cifar10-resnet20-nf")` loads
from `src/gzsq/models/weights/cifar10-resnet20-nf.pt`.

How to run (from the repository root):

    .venv/bin/python experiments/train_bnfree_resnet.py --epochs 8 --seed 0 --threads 1               # ResNet-20
    .venv/bin/python experiments/train_bnfree_resnet.py --depth 32 --epochs 12 --seed 0 --threads 1   # ResNet-32
    .venv/bin/python experiments/train_bnfree_resnet.py --depth 32 --bn --epochs 12 --seed 0 --threads 1  # its BN twin
    .venv/bin/python experiments/train_bnfree_resnet.py --depth 56 --bn --epochs 8 --seed 0 --threads 2   # deeper_resnet.py's

`--depth` picks the graph (this text describes ResNet-20; ResNet-32 is the same with L = 15 branches);
`--bn` trains the BatchNorm twin with the same recipe (standard He init), recorded but not shipped.

It writes the weights (atomically, after every epoch and at the end) and
`results/bnfree_training.json` (seed, hyper-parameters, per-epoch log, final
top-1 on all 10 000 test images, the command line).

Why Fixup-style init (Zhang, Dauphin & Ma, "Fixup Initialization: Residual
Learning Without Normalization", ICLR 2019): without BatchNorm, a residual
net with standard He init has an output variance that grows with every block,
so SGD at a usual learning rate diverges or stalls. Fixup makes each residual
branch start (near) zero and rescales the branches so the update each makes is
O(1/L) of the total: He init for every conv, the first conv of each of the
L = 9 residual branches scaled by L^(-1/(2m-2)) = L^(-1/2) (m = 2 layers per
branch), the last conv of each branch and the classifier zero-initialized, all
biases zero. At step 0 the net is the stem conv followed by identities, and
training is stable at lr 0.1 without any normalizer. (Fixup's extra scalar
biases/multiplier are omitted: the convs here already carry per-channel
biases, and the architecture must stay exactly CifarResNet(20, norm=False).)
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gzsq.atomic import atomic_write_bytes
from gzsq.data import load_dataset
from gzsq.models.resnet_cifar import BasicBlock, CifarResNet
from gzsq.models.zoo import CIFAR_SPEC, WEIGHTS_DIR

ROOT = Path(__file__).resolve().parent.parent

TRAIN = "/work/shared/data/cifar10/train-jpeg.tar"
TEST = "/work/shared/data/cifar10/test.npz"


def fixup_init(model: CifarResNet) -> None:
    """Fixup-style init of CifarResNet(norm=False), in place (see module docstring)."""
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    n_branches = len(blocks)  # L = 9 for ResNet-20, 15 for ResNet-32
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for b in blocks:
        with torch.no_grad():
            b.conv1.weight.mul_(n_branches ** -0.5)
        nn.init.zeros_(b.conv2.weight)
    nn.init.zeros_(model.linear.weight)
    nn.init.zeros_(model.linear.bias)


def he_init(model: CifarResNet) -> None:
    """Standard init of the BN twin: He (fan_out) convs, BN weight 1 / bias 0, torch's default linear."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def save_state(model: nn.Module, path: Path) -> None:
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def save_json(obj, path: Path) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


_MEAN = torch.tensor(CIFAR_SPEC.mean, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(CIFAR_SPEC.std, dtype=torch.float32).view(1, 3, 1, 1)


def normalize(u8_nchw: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W → normalized float, identical to CIFAR_SPEC.to_tensor."""
    return (u8_nchw.float() / 255.0 - _MEAN) / _STD


def augment(u8_nchw: torch.Tensor, gen: np.random.Generator) -> torch.Tensor:
    """Random 32×32 crop of the 4-pixel zero(black)-padded image + random horizontal flip."""
    n = u8_nchw.shape[0]
    padded = F.pad(u8_nchw, (4, 4, 4, 4))  # black border, as RandomCrop(32, padding=4) on the PIL image
    dy = gen.integers(0, 9, n)
    dx = gen.integers(0, 9, n)
    flip = gen.random(n) < 0.5
    out = torch.empty_like(u8_nchw)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


@torch.no_grad()
def top1(model: nn.Module, images_u8: torch.Tensor, labels: torch.Tensor, bs: int = 500) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(labels), bs):
        x = normalize(images_u8[s:s + bs])
        if next(model.parameters()).is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        correct += int((logits.argmax(1) == labels[s:s + bs]).sum())
    model.train()
    return correct / len(labels)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * t))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=20,
                   help="CIFAR ResNet depth 6n+2 (20 ships as cifar10-resnet20-nf, 32 as cifar10-resnet32-nf)")
    p.add_argument("--bn", action="store_true",
                   help="train the BatchNorm twin instead (same graph with BN, standard He init, same recipe); "
                        "it is not shipped, only its accuracy is recorded")
    p.add_argument("--epochs", type=int, default=12, help="training epochs (391 batches each at batch 128)")
    p.add_argument("--seed", type=int, default=0, help="seed for torch init and numpy shuffling/augmentation")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: leave the other core free)")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate after the 1-epoch linear warmup")
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay on conv/linear weights (not biases)")
    p.add_argument("--clip", type=float, default=5.0, help="max global gradient norm")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep NCHW tensors (default: channels_last, ~15%% faster on this CPU; same math)")
    p.add_argument("--eval-subset", type=int, default=2000, help="test images used for the per-epoch monitor")
    p.add_argument("--max-batches", type=int, default=0,
                   help="stop after this many batches in total (timing runs); 0 = full run. "
                        "With it set, nothing is saved.")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write the state_dict (default: the shipped weights for the BN-free 20 and 32, "
                        "runs/cifar10-resnetN-bn.pt for a BN twin)")
    p.add_argument("--results", type=Path, default=None,
                   help="where to write the JSON summary (default: results/bnfree_training.json for depth 20, "
                        "results/bnfree_training_resnetN[-bn].json otherwise)")
    args = p.parse_args(argv)
    if (args.depth - 2) % 6 or args.depth < 8:
        p.error("--depth must be 6n+2 (20, 32, 44, ...)")
    tag = f"resnet{args.depth}" + ("-bn" if args.bn else "")
    if args.out is None:
        args.out = (ROOT / "runs" / f"cifar10-{tag}.pt" if args.bn
                    else WEIGHTS_DIR / f"cifar10-resnet{args.depth}-nf.pt")
    if args.results is None:
        args.results = ROOT / "results" / ("bnfree_training.json" if tag == "resnet20"
                                           else f"bnfree_training_{tag}.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = np.random.default_rng(args.seed)
    timing_only = args.max_batches > 0

    t0 = time.time()
    ds = load_dataset(TRAIN)
    train_x = torch.from_numpy(np.stack(ds.images(range(len(ds))))).permute(0, 3, 1, 2).contiguous()
    train_y = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))
    with np.load(TEST) as z:
        test_x = torch.from_numpy(z["images"]).permute(0, 3, 1, 2).contiguous()
        test_y = torch.from_numpy(z["labels"].astype(np.int64))
    mon = np.random.default_rng(12345).choice(len(test_y), args.eval_subset, replace=False)
    mon_x, mon_y = test_x[mon], test_y[mon]
    print(f"data: train {tuple(train_x.shape)} test {tuple(test_x.shape)} loaded in {time.time() - t0:.1f}s",
          flush=True)
    # Sanity: per-batch normalization matches the model's InputSpec.
    ref = CIFAR_SPEC.to_tensor([x.permute(1, 2, 0).numpy() for x in train_x[:4]])
    assert torch.allclose(ref, normalize(train_x[:4]), atol=1e-5)

    model = CifarResNet(args.depth, norm=args.bn)
    if args.bn:
        he_init(model)
    else:
        fixup_init(model)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    model.train()
    # weight decay on conv/linear weights only, not on biases or BN scales
    decay = [p_ for n, p_ in model.named_parameters() if n.endswith("weight") and p_.dim() > 1]
    no_decay = [p_ for n, p_ in model.named_parameters() if not (n.endswith("weight") and p_.dim() > 1)]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9, nesterov=True)

    n = len(train_y)
    steps_per_epoch = math.ceil(n / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = steps_per_epoch
    step = 0
    log = []
    t_train = time.time()
    for epoch in range(1, args.epochs + 1):
        te = time.time()
        perm = gen.permutation(n)
        loss_sum, correct, seen = 0.0, 0, 0
        for s in range(0, n, args.batch_size):
            idx = torch.from_numpy(perm[s:s + args.batch_size])
            x = normalize(augment(train_x[idx], gen)).contiguous(memory_format=fmt)
            y = train_y[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, args.lr)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                print(f"non-finite loss at epoch {epoch} step {step}; aborting", flush=True)
                return 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            step += 1
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if step % 50 == 0:
                print(f"  epoch {epoch} step {step}/{total} loss {loss_sum / seen:.4f} acc {correct / seen:.4f} "
                      f"lr {opt.param_groups[0]['lr']:.4f} {time.time() - te:.1f}s", flush=True)
            if timing_only and step >= args.max_batches:
                dt = time.time() - te
                print(f"timing: {step} batches in {dt:.1f}s = {dt / step:.3f}s/batch "
                      f"-> {dt / step * steps_per_epoch:.0f}s/epoch", flush=True)
                return 0
        secs = time.time() - te
        mon_acc = top1(model, mon_x, mon_y)
        entry = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                 "seconds": round(secs, 1), "lr_end": opt.param_groups[0]["lr"],
                 f"test_top1_subset{args.eval_subset}": mon_acc}
        log.append(entry)
        print(f"epoch {epoch}/{args.epochs} train_loss {entry['train_loss']:.4f} train_acc {entry['train_acc']:.4f} "
              f"test_top1[{args.eval_subset}] {mon_acc:.4f} {secs:.1f}s", flush=True)
        save_state(model, args.out)

    train_seconds = time.time() - t_train
    final = top1(model, test_x, test_y)
    print(f"final test top-1 (10000 images): {final:.4f}; trained in {train_seconds:.0f}s", flush=True)
    save_state(model, args.out)
    save_json({
        "model": (f"CifarResNet({args.depth}, norm=True), BN twin, not shipped" if args.bn
                  else f"CifarResNet({args.depth}, norm=False) -> cifar10-resnet{args.depth}-nf"),
        "init": ("He (fan_out) convs, BN weight 1 / bias 0, torch default linear" if args.bn else
                 f"Fixup-style: He (fan_out) convs, branch conv1 * L^-1/2 (L={args.depth // 2 - 1}), "
                 "branch conv2 = 0, biases = 0, linear = 0"),
        "seed": args.seed, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
        "optimizer": "SGD momentum 0.9 nesterov, 1-epoch linear warmup then cosine to 0",
        "weight_decay": args.weight_decay, "weight_decay_on_biases": False, "grad_clip_norm": args.clip,
        "augmentation": "random crop 32 of 4-px black-padded image + horizontal flip",
        "threads": args.threads, "channels_last": args.channels_last, "train_seconds": round(train_seconds, 1),
        "final_test_top1": final, "final_test_images": int(len(test_y)),
        "checkpoint": str(args.out), "per_epoch": log, "command": command,
        "torch": torch.__version__,
    }, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
