"""Can the start or the form of the targets widen the deep ranges of distilled images?

    python experiments/deep_width_levers.py --models efficientnet-lite0 cifar10-resnet32 --steps 20 60 \
        > results/fidelity/deep_width_levers.txt

gzsq's deep residual-stream ranges come out 0.3–0.5× as wide as real images' (results/fidelity/). Two causes are
possible: the images never leave their white-noise start there, or the propagated targets ask for too little.
For each model this distills one batch (16 images at 224², 128 at 32², seed 0; Adam lr 0.2, pixels clamped,
the input kept N(0, 1), KL at every conv/linear output: the default recipe's loss) in a small loop of its own,
with one of:

- prop: the default targets, propagated from the weights (`gzsq.targets.weight_targets`, moments, ReLU-aware,
  ρ = 1, std floor 0.1× the median);
- local: each layer's target is its rule applied to the batch's *current* input statistics at that layer (one
  step, no errors handed down from earlier layers; the prediction is held fixed within a step);
- both: the sum of the two losses, prop's and local's;
- halfway: one target halfway between the two (mean of the means, geometric mean of the stds);
- local@C: local targets with the rule's coherence C instead of 1 (C = 0: independent pixels; the rule then
  asks for narrower outputs than ρ = 1 does);
- +nat: the start is noise with natural images' 1/f amplitude spectrum and 0.85 colour correlation
  (`gzsq.distillation.loop.natural_noise`) instead of white noise.

It prints, per source, the median over the leaf modules of (output range width / real images' width) in the
first, middle and last third of the modules in order (real: the first 16 sample images, 16 classes / 128
CIFAR-10 test images at an even stride, every class). 1 is right; the deep third is the one that costs agreement.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gzsq
from gzsq import data as D
from gzsq.distillation.loop import _channel_stats, natural_noise
from gzsq.distillation.losses import kl
from gzsq.fold import fold_bn
from gzsq.metrics import output_widths
from gzsq.targets import Stat, one_step, weight_targets

from assets import CIFAR_TEST, IMAGENET_SAMPLE, WEIGHTS, every_class
VARIANTS = ["prop", "prop+nat", "local", "local+nat", "both", "halfway", "local@0.5", "local@0.75"]


def run(name: str, steps_list: list[int], variants: list[str]) -> None:
    model = gzsq.load_model(name, str(WEIGHTS[name])) if name in WEIGHTS else gzsq.load_model(name)
    net = fold_bn(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    cifar = name.startswith("cifar10")
    evals = D.load_eval_set(net, CIFAR_TEST if cifar else IMAGENET_SAMPLE)
    n = 128 if cifar else 16
    real = (every_class(evals.images, n) if cifar else evals.images[:n]).float()  # the sample: one per class
    low, high = model.input_spec.pixel_bounds()
    t = weight_targets(net, rule="moments", relu_aware=True, coherence=1.0)
    targets = {k: (v.mean, v.std.clamp_min(0.1 * float(v.std.median()))) for k, v in t.layers.items()}
    modules = dict(net.named_modules())

    def widths(x):
        return output_widths(net, x)

    ref = widths(real)
    names = list(ref)
    third = len(names) // 3

    def line(label, x):
        got = widths(x)
        ratios = [got[k] / max(ref[k], 1e-6) for k in names]
        parts = [statistics.median(ratios[i * third:(i + 1) * third if i < 2 else None]) for i in range(3)]
        print(f"{name:20s} {label:28s} " + " / ".join(f"{p:.2f}" for p in parts), flush=True)

    inputs, outputs = {}, {}
    hooks = []
    for k in targets:
        def grab(m, i, o, k=k):
            inputs[k], outputs[k] = i[0], o
        hooks.append(modules[k].register_forward_hook(grab))
    white = torch.randn((n,) + tuple(real.shape[1:]), generator=torch.Generator().manual_seed(0))
    line("white noise (no steps)", white)
    line("natural noise (no steps)", natural_noise(white, 1.0, 0.85))
    for steps in steps_list:
        for variant in variants:
            mode, _, coh = variant.replace("+nat", "").partition("@")
            coherence = float(coh) if coh else 1.0
            x = (natural_noise(white, 1.0, 0.85) if variant.endswith("+nat") else white.clone()).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=0.2)
            start = time.perf_counter()
            for _ in range(steps):
                opt.zero_grad()
                net(x)
                loss = torch.zeros(())
                for k, (mu, sd) in targets.items():
                    m, s = _channel_stats(outputs[k], n)
                    if mode in ("local", "both", "halfway"):
                        with torch.no_grad():
                            xin = inputs[k]
                            dims = (0, 2, 3) if xin.dim() == 4 else (0,)
                            pred = one_step(modules[k], Stat(xin.mean(dims), xin.std(dims)), coherence)
                        if mode == "both":
                            loss = loss + kl(m, s, mu, sd)
                        local_sd = pred.std.clamp_min(0.1 * float(pred.std.median()) + 1e-6)
                        if mode == "halfway":  # the mean of the two targets' means, the geometric mean of their stds
                            mu, sd = 0.5 * (mu + pred.mean), (sd * local_sd).sqrt()
                        else:
                            mu, sd = pred.mean, local_sd
                    loss = loss + kl(m, s, mu, sd)
                loss = loss / len(targets)
                loss = loss + kl(x.mean().reshape(1), x.std().reshape(1), torch.zeros(1), torch.ones(1))
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.data = torch.max(torch.min(x.data, high), low)
            line(f"{variant}, {steps} steps ({time.perf_counter() - start:.0f} s)", x.detach())
    for h in hooks:
        h.remove()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["efficientnet-lite0"])
    p.add_argument("--steps", nargs="+", type=int, default=[20])
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print("model                source                       width / real width: first / middle / last third")
    for name in args.models:
        run(name, args.steps, args.variants)


if __name__ == "__main__":
    main()
