"""Which of gzsq's weight-derived targets cost W4A4 reconstruction: swap in the BN statistics, part by part.

On the BN-trained CIFAR ResNets the folded network's conv outputs have, on the training data, per-channel mean β
and standard deviation |γ| of the BatchNorm that was folded into them. Those are the values gzsq's propagated
targets estimate from the weights alone. This script distils the W4A4 job's own set (`half-local`, 256 images,
the same seed) with some of the propagated targets replaced by (β, |γ|), reconstructs at W4A4 with the defaults,
and reports simulator top-1 on all 10 000 CIFAR-10 test images. The BN statistics only measure here: nothing in
the product reads them in the bn-free setting.

Variants (the local half is untouched in all but `oracle-only`, whose whole set uses the replaced targets):

- `gzsq`: no replacement (must reproduce results/lowbit/recon_settings.jsonl's default row for the seed);
- `oracle`: means and stds of every BN-fed conv; `oracle-mean`, `oracle-std`: only one of the two;
- `oracle-third1|2|3`: means and stds in the first, middle or last third of the target layers (forward order;
  the classifier, last, has no BatchNorm and keeps its target);
- `gzsq-scale`: gzsq's means, and gzsq's stds times one number per layer, the median BN std over gzsq's median
  std: whether one scale per layer is all gzsq's stds miss (their log correlates with the BN stds' at 0.9–0.98
  per layer, results/fidelity/std_dispersion.txt); `oracle-scale`: the same stds beside the BN means;
- `local-scale`: the BN statistics of every BN-fed conv (gzsq's propagated targets where there is none: every
  layer of a never-normalized net, and the logits), their stds times one number per layer and step, the median
  of the local rule's stds (the rule on the images' input statistics at that step) over the median of theirs; on
  a BN-trained net this is an oracle (BN means and the BN stds' pattern), not weights only.
  `gzsq-local-scale`: the same on gzsq's propagated targets everywhere, weights only (what presets
  `rescaled` and `half-rescaled` did, measured through the command at commit 386931c and removed,
  what_limits_reconstruction.md §36); `local-scale-mean`: `local-scale` with the local rule's means;
  `--beside-local` makes half the set (128 images) with the variant's targets and the other half with the
  `local` preset's;
- `zeroq`: the zeroq source's own set (bn setting: BN inputs, unfolded scale, no target on the logits), `--distill`
  replacing settings of ZeroQ's recipe;
- `oracle-only`: `oracle` on the whole set, no local half (ZeroQ's statistics with gzsq's recipe); `--whole` does
  the same for any variant; `--no-classifier` drops the target on the logits, which no BatchNorm gives;
  `--keep-thirds 1 2` keeps the targets of those thirds of the target layers only and drops the rest (with
  `gzsq`, a recipe that still reads nothing but the weights).

    python experiments/oracle_targets.py --model cifar10-resnet32 --seed 0 --variants gzsq oracle
    python experiments/oracle_targets.py --variants oracle-only --distill iterations=100   # recipe settings
    python experiments/oracle_targets.py --whole --variants oracle-std --distill iterations=100
    python experiments/oracle_targets.py --whole --no-classifier --keep-thirds 1 --variants gzsq \\
        --distill iterations=100
    python experiments/oracle_targets.py --model cifar10-resnet44 --variants zeroq \\
        --distill "iterations=100,lr=0.2,loss='kl',clamp_pixels=True,early_stop_patience=0"

One JSON line per run goes to results/lowbit/oracle_targets.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

import gzsq
from assets import CIFAR_TEST, load_zoo_model, short_commit
from gzsq.data import load_eval_set
from gzsq.distillation.loop import distill_images
from gzsq.fold import fold_bn, trace
from gzsq.metrics import predict, top1
from gzsq.models.validate import model_name
from gzsq.quantization.sim import quantize
from gzsq.reconstruct import reconstruct
from gzsq.sources.gzsq import _local_rule as local_rule, _split_local, objective_for, recipe_for
from gzsq.sources.calibrate import calibrate
from gzsq.sources.registry import input_shape
from overrides import parse_overrides

OUT = Path(__file__).resolve().parent.parent / "results" / "lowbit" / "oracle_targets.jsonl"
VARIANTS = ("gzsq", "oracle", "oracle-mean", "oracle-std", "oracle-third1", "oracle-third2", "oracle-third3",
            "oracle-only", "zeroq", "gzsq-scale", "oracle-scale", "local-scale", "local-scale-mean",
            "gzsq-local-scale")


def bn_statistics(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Conv module path → (β, |γ|) of the BatchNorm that reads its output: the folded conv's output statistics."""
    gm = trace(model.eval())
    modules = dict(gm.named_modules())
    found = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d):
            bn, src = modules[node.target], node.args[0]
            found[src.target] = (bn.bias.detach().clone(), bn.weight.detach().abs().clone())
    return found


def swapped(targets: dict, oracle: dict, variant: str, floor: float) -> dict:
    """`targets` with the variant's entries replaced by the BN statistics (stds floored as gzsq floors its own)."""
    names = list(targets)
    thirds = [set(names[i * len(names) // 3:(i + 1) * len(names) // 3]) for i in range(3)]
    out = {}
    for name, (mean, std) in targets.items():
        if name in oracle and variant not in ("gzsq", "gzsq-local-scale"):
            o_mean, o_std = oracle[name]
            o_std = o_std.clamp_min(floor * float(o_std.median()))
            if variant.startswith("oracle-third") and name not in thirds[int(variant[-1]) - 1]:
                pass
            elif variant == "oracle-mean":
                mean = o_mean
            elif variant == "oracle-std":
                std = o_std
            elif variant in ("gzsq-scale", "oracle-scale"):
                std = std * (o_std.median() / std.median())
                mean = o_mean if variant == "oracle-scale" else mean
            else:  # oracle, oracle-only, oracle-third*, local-scale, local-scale-mean: the BN statistics
                mean, std = o_mean, o_std
        out[name] = (mean, std)
    return out


def _scaled_by_local(folded: nn.Module, targets: dict, rule, local_means: bool):
    """A local rule that returns the propagated target's pattern at the local rule's scale for the layer."""
    by_layer = {id(m): k for k, m in folded.named_modules()}

    def scaled(layer, mean, std):
        mu, sigma = targets[by_layer[id(layer)]]
        l_mean, l_std = rule(layer, mean, std)
        live = sigma > 0  # a never-normalized net can have layers where most channels are predicted constant
        return (l_mean if local_means else mu), sigma * (l_std[live].median() / sigma[live].median())
    return scaled


def kept(targets: dict, thirds: tuple[int, ...]) -> dict:
    """Only the targets of the given thirds (1, 2, 3) of the target layers, in forward order."""
    names = list(targets)
    keep = {n for i in thirds for n in names[(i - 1) * len(names) // 3:i * len(names) // 3]}
    return {k: v for k, v in targets.items() if k in keep}


def distil(model: nn.Module, variant: str, seed: int, n: int = 256, overrides=(),
           whole: bool = False, classifier: bool = True,
           thirds: tuple[int, ...] = (1, 2, 3)) -> tuple[torch.Tensor, float]:
    """The W4A4 job's gzsq set (`half-local`, `overrides` replacing its settings), distilled with the variant's
    targets. → images, seconds. `zeroq`: the zeroq source itself (bn setting), `overrides` replacing its recipe."""
    if variant == "zeroq":
        start = time.time()
        config = gzsq.CalibrationConfig(source="zeroq", seed=seed, setting="bn", n_images=n)
        return calibrate(model, config, overrides=tuple(overrides)).images, time.time() - start
    folded = fold_bn(model)
    recipe = recipe_for("half-local", overrides)
    t = recipe.targets
    objective = objective_for(folded, t)
    oracle = bn_statistics(model)
    if not oracle and variant not in ("gzsq", "local-scale", "local-scale-mean", "gzsq-local-scale"):
        raise SystemExit(f"{model_name(model)} has no BatchNorm: there are no statistics to swap in")
    targets = swapped(objective.targets, oracle, variant, t.std_floor)
    num_classes = list(targets.values())[-1][0].numel()
    if not classifier:  # as ZeroQ: no target where no BatchNorm was folded (without BN: on the logits)
        targets = {k: v for k, v in targets.items() if k in oracle} if oracle else dict(list(targets.items())[:-1])
    targets = kept(targets, thirds)
    objective = replace(objective, targets=targets)
    shape, distill = input_shape(model), recipe.distill
    if "local-scale" in variant:  # the whole set on the (swapped) targets' pattern, scaled by the local rule
        objective = replace(objective, local_rule=_scaled_by_local(folded, targets, local_rule(t),
                                                                   variant == "local-scale-mean"), local_batches=None)
    elif whole or variant == "oracle-only":
        objective = replace(objective, local_rule=None)
    elif t.local and t.local_fraction < 1.0:  # as the gzsq source splits the set
        objective, distill = _split_local(objective, distill, n, shape, t.local_fraction)
    start = time.time()
    images, _ = distill_images(folded, objective, n, shape, distill, seed=seed,
                               pixel_bounds=model.input_spec.pixel_bounds(),
                               num_classes=num_classes, desc=variant)
    return images, time.time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar10-resnet32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=["gzsq", "oracle"], choices=VARIANTS)
    p.add_argument("--bits", default="4,4")
    p.add_argument("--whole", action="store_true", help="the whole set on the (swapped) propagated targets")
    p.add_argument("--no-classifier", action="store_true", help="drop the targets no BatchNorm gives (the logits)")
    p.add_argument("--keep-thirds", nargs="+", type=int, default=[1, 2, 3], choices=[1, 2, 3],
                   help="keep only these thirds of the target layers' targets (forward order)")
    p.add_argument("--distill", default="",
                   help="settings of the half-local recipe (targets or distillation) to replace, k=v[,k=v]")
    p.add_argument("--beside-local", action="store_true",
                   help="half the set from the variant (as with --whole; --distill applies to this half only), "
                        "the other half the `local` preset's images (local targets, 20 steps)")
    args = p.parse_args()
    thirds = tuple(sorted(set(args.keep_thirds)))
    if "zeroq" in args.variants and (args.whole or args.no_classifier or thirds != (1, 2, 3)):
        p.error("--whole, --no-classifier and --keep-thirds do not apply to the zeroq variant "
                "(it has no local half and no logits target)")
    torch.set_num_threads(1)
    w_bits, a_bits = (int(b) for b in args.bits.split(","))
    model = load_zoo_model(args.model)
    data = load_eval_set(model, CIFAR_TEST)
    fp32 = predict(model, data.images)
    commit = short_commit()
    for variant in args.variants:
        n = 128 if args.beside_local else 256
        calib, distill_s = distil(model, variant, args.seed, n=n, overrides=parse_overrides(args.distill),
                                   whole=args.whole or args.beside_local, classifier=not args.no_classifier,
                                   thirds=thirds)
        if args.beside_local:
            start = time.time()
            local = calibrate(model, gzsq.CalibrationConfig(source="gzsq", preset="local", n_images=128,
                                                            seed=args.seed, setting="bn-free")).images
            calib, distill_s = torch.cat([local, calib]), distill_s + time.time() - start
        start = time.time()
        sim = quantize(model, calib, gzsq.QuantConfig.starting_point(w_bits, a_bits))
        sim = reconstruct(model, sim, calib, gzsq.ReconstructConfig(), seed=args.seed)
        pred = predict(sim, data.images)
        line = {"model": args.model, "w_bits": w_bits, "a_bits": a_bits, "seed": args.seed, "variant": variant,
                **({"distill": args.distill} if args.distill else {}), **({"whole": True} if args.whole else {}),
                **({"classifier": False} if args.no_classifier else {}),
                **({"beside_local": True} if args.beside_local else {}),
                **({"thirds": list(thirds)} if thirds != (1, 2, 3) else {}),
                "top1": round(top1(pred, data.labels), 2), "agreement": round(float((pred == fp32).mean() * 100), 2),
                "distill_s": round(distill_s, 1), "reconstruct_s": round(time.time() - start), "commit": commit}
        print(json.dumps(line), flush=True)
        with OUT.open("a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
