"""Train the plain, normalization-free CIFAR-10 VGG that ships as `cifar10-vgg7-nf`.

What: `gzsq.models.vgg_cifar.CifarVGG(norm=False)` -- 3×3 convs with bias and ReLU in
three stages of widths 32,32 | 64,64 | 128,128, a 2×2 max-pool after each stage, global
average pool, linear 128→10; no residual connection and no normalization layer -- trained
from scratch on the 50 000 CIFAR-10 training images. The checkpoint is the plain state_dict
that `gzsq.models.load_model("cifar10-vgg7-nf")` loads from
`src/gzsq/models/weights/cifar10-vgg7-nf.pt`.

How to run (from the repository root):

    .venv/bin/python experiments/train_bnfree_vgg.py --epochs 10 --seed 0 --threads 1
    .venv/bin/python experiments/train_bnfree_vgg.py --epochs 10 --seed 0 --threads 1 --norm bn   # BN twin

It writes the weights (atomically, after every epoch and at the end) and
`results/vgg_training.json` (seed, hyper-parameters, per-epoch log, train_seconds, final
top-1 on all 10 000 test images, the command line). `--norm bn` trains the same graph with a
BatchNorm after each (bias-free) conv, from the same seed and schedule, writes its weights to
runs/ (not shipped) and its summary to `results/vgg_bn_training.json`, and records its final
top-1 under "bn_twin" in `results/vgg_training.json`.

Init: plain He (Kaiming normal, fan_in, ReLU gain) for every conv, zero biases, the
classifier N(0, 0.01²) with zero bias. A net this shallow (7 weight layers) keeps its
activation scale through He init alone; no Fixup-style rescaling is needed. Optimizer,
schedule, augmentation, monitoring and atomic writes are those of
experiments/train_bnfree_resnet.py (its helpers are imported, not copied).
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

from gzsq.data import load_dataset
from gzsq.models.vgg_cifar import VGG7_WIDTHS, CifarVGG
from gzsq.models.zoo import CIFAR_SPEC, VGG_NF_CHECKPOINT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bnfree_resnet import TEST, TRAIN, augment, lr_at, normalize, save_json, save_state, top1  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NF_RESULTS = ROOT / "results" / "vgg_training.json"
BN_RESULTS = ROOT / "results" / "vgg_bn_training.json"
BN_CHECKPOINT = ROOT / "runs" / "cifar10-vgg7-bn.pt"


def he_init(model: CifarVGG) -> None:
    """He (fan_in) convs, zero biases; classifier N(0, 0.01²), zero bias. BN layers keep γ=1, β=0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.normal_(model.linear.weight, std=0.01)
    nn.init.zeros_(model.linear.bias)


def record_twin(summary: dict, path: Path) -> None:
    """Add the BN twin's final top-1 to the normalization-free run's JSON (atomically)."""
    if not path.exists():
        print(f"{path} does not exist yet; the BN twin's result stays in its own file only", flush=True)
        return
    main_summary = json.loads(path.read_text())
    main_summary["bn_twin"] = {k: summary[k] for k in ("model", "seed", "epochs", "lr", "train_seconds",
                                                       "final_test_top1", "final_test_images", "command")}
    main_summary["bn_twin"]["results"] = str(BN_RESULTS.relative_to(ROOT))
    save_json(main_summary, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10, help="training epochs (391 batches each at batch 128)")
    p.add_argument("--seed", type=int, default=0, help="seed for torch init and numpy shuffling/augmentation")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: leave the other core free)")
    p.add_argument("--norm", choices=["none", "bn"], default="none",
                   help="none: the shipped net; bn: the same graph with BatchNorm after each conv (comparison twin)")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate after the 1-epoch linear warmup")
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay on conv/linear weights (not biases)")
    p.add_argument("--clip", type=float, default=5.0, help="max global gradient norm")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep NCHW tensors (default: channels_last; same math)")
    p.add_argument("--eval-subset", type=int, default=2000, help="test images used for the per-epoch monitor")
    p.add_argument("--max-batches", type=int, default=0,
                   help="stop after this many batches in total (timing runs); 0 = full run. "
                        "With it set, nothing is saved.")
    p.add_argument("--out", type=Path, default=None,
                   help=f"where to write the state_dict (default: {VGG_NF_CHECKPOINT.name} in the package's "
                        f"weights folder; {BN_CHECKPOINT.relative_to(ROOT)} with --norm bn)")
    p.add_argument("--results", type=Path, default=None,
                   help=f"where to write the JSON summary (default: {NF_RESULTS.relative_to(ROOT)}; "
                        f"{BN_RESULTS.relative_to(ROOT)} with --norm bn)")
    args = p.parse_args(argv)
    bn = args.norm == "bn"
    out = args.out or (BN_CHECKPOINT if bn else VGG_NF_CHECKPOINT)
    results = args.results or (BN_RESULTS if bn else NF_RESULTS)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"# {command}", flush=True)

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
    ref = CIFAR_SPEC.to_tensor([x.permute(1, 2, 0).numpy() for x in train_x[:4]])
    assert torch.allclose(ref, normalize(train_x[:4]), atol=1e-5)

    model = CifarVGG(VGG7_WIDTHS, norm=bn)
    he_init(model)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    model.train()
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
        save_state(model, out)

    train_seconds = time.time() - t_train
    final = top1(model, test_x, test_y)
    print(f"final test top-1 (10000 images): {final:.4f}; trained in {train_seconds:.0f}s", flush=True)
    save_state(model, out)
    name = "CifarVGG(norm=True), BN twin, not shipped" if bn else "CifarVGG(norm=False) -> cifar10-vgg7-nf"
    summary = {
        "model": f"{name}; widths {[list(s) for s in VGG7_WIDTHS]}",
        "init": "He (Kaiming normal, fan_in, ReLU) convs, biases = 0, linear N(0, 0.01^2), linear bias = 0"
                + ("; BN gamma = 1, beta = 0" if bn else ""),
        "seed": args.seed, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
        "optimizer": "SGD momentum 0.9 nesterov, 1-epoch linear warmup then cosine to 0",
        "weight_decay": args.weight_decay, "weight_decay_on_biases_and_bn": False, "grad_clip_norm": args.clip,
        "augmentation": "random crop 32 of 4-px black-padded image + horizontal flip",
        "threads": args.threads, "channels_last": args.channels_last, "train_seconds": round(train_seconds, 1),
        "final_test_top1": final, "final_test_images": int(len(test_y)),
        "checkpoint": str(out.resolve().relative_to(ROOT)) if out.resolve().is_relative_to(ROOT) else str(out),
        "per_epoch": log, "command": command, "torch": torch.__version__,
    }
    save_json(summary, results)
    if bn and args.results is None:
        record_twin(summary, NF_RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
