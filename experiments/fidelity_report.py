"""Where gzsq's calibration ranges differ from real images', and what each difference costs.

    python experiments/fidelity_report.py --models efficientnet-lite0,mobilenet-v2,cifar10-resnet20-nf --threads 1

For each model (BN-free setting: BN folded, so gzsq reads folded weights only), writes
`results/fidelity/<model>.md` and `results/fidelity/<model>.png`:

1. **Ranges.** For every tensor the simulator quantizes (reference placement: the network input, every
   Conv/Linear input, every residual-add output), the min/max range calibrated on gzsq's images
   (preset `default`), on two disjoint sets of real images (folds A and B) and on Gaussian noise;
   the width ratio to real fold A, and which side is off (`hi` or `lo`, too wide or too narrow).
   Real fold A vs fold B says how much two draws of real images differ by themselves.
2. **Targets.** For every Conv/Linear output (before its activation), the per-channel target
   mean/std gzsq computes from the weights (`gzsq.targets`, the default preset's settings, with
   its std floor) against the statistics real images produce (fold A), and what gzsq's images
   actually reach.
3. **Contributions.** The simulated model calibrated on gzsq's images; then, one tensor at a time,
   that tensor's range replaced by real fold A's range, and the change in top-1 agreement with
   FP32 (and in the mean KL divergence of the quantized logits from FP32's, which ranks tensors
   more finely than a count of flipped images) on a fixed evaluation subset that no calibration
   set contains. Finally the k most harmful ranges swapped together.

Real images: ImageNet models use the 500-image sample split by position in labels.csv: fold A is
64 of the even rows, fold B 64 of the odd rows, and the evaluation subset is odd rows not in fold
B (so nothing is calibrated on and evaluated). CIFAR: folds A and B are two disjoint draws of 256
images from train-jpeg.tar; the evaluation subset is every k-th image of test.npz.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from assets import CIFAR_TEST, CIFAR_TRAIN, IMAGENET_SAMPLE, WEIGHTS
from overrides import parse_overrides

from gzsq.atomic import atomic_write_text
from gzsq.config import QuantConfig
from gzsq.data import load_dataset
from gzsq.fold import fold_bn
from gzsq.models import load_model
from gzsq.quantization.sim import quantize
from gzsq.sources import SourceOptions, make_calibration
from gzsq.sources.gzsq import layer_targets, recipe_for

ROOT = Path(__file__).resolve().parents[1]


def model_setup(name: str) -> dict:
    if name.startswith("cifar10-"):
        return dict(weights=WEIGHTS.get(name), data=CIFAR_TEST, real=CIFAR_TRAIN, n=256)
    return dict(weights=WEIGHTS.get(name), data=IMAGENET_SAMPLE, real=None, n=64)


def pick_images(setup: dict, model, n_eval: int, seed: int):
    """(real fold A, real fold B, evaluation images, description) as tensors in the model's input space."""
    rng = np.random.default_rng(seed)
    spec = model.input_spec
    data = load_dataset(setup["data"])
    n = setup["n"]
    if setup["real"] is None:  # one small set: folds by position, evaluate on rows never calibrated on
        rows = np.arange(len(data))
        even, odd = rows[0::2], rows[1::2]
        a = np.sort(rng.choice(even, n, replace=False))
        b = np.sort(rng.choice(odd, n, replace=False))
        rest = np.setdiff1d(odd, b)
        ev = rest[np.linspace(0, len(rest) - 1, min(n_eval, len(rest))).round().astype(int)]
        what = (f"real fold A = {n} of the even rows of {setup['data'].name}, fold B = {n} of the odd rows; "
                f"evaluation = {len(ev)} odd rows not in fold B")
        return (spec.to_tensor(data.images(a)), spec.to_tensor(data.images(b)), spec.to_tensor(data.images(ev)),
                what, len(ev))
    train = load_dataset(setup["real"])
    pool = rng.permutation(len(train))[:2 * n]
    a, b = np.sort(pool[:n]), np.sort(pool[n:])
    step = max(1, len(data) // n_eval)
    ev = np.arange(0, len(data), step)[:n_eval]
    what = (f"real folds A and B = two disjoint draws of {n} images from {setup['real'].name}; "
            f"evaluation = every {step}th image of {setup['data'].name} ({len(ev)} images)")
    return (spec.to_tensor(train.images(a)), spec.to_tensor(train.images(b)), spec.to_tensor(data.images(ev)),
            what, len(ev))


@torch.no_grad()
def logits_of(model, images: torch.Tensor, batch: int = 50) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i:i + batch]) for i in range(0, len(images), batch)])


def compare(logits: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(agreement % of top-1 with FP32, mean KL(FP32 softmax ‖ quantized softmax))."""
    agree = float((logits.argmax(1) == ref.argmax(1)).float().mean() * 100)
    kl = float(F.kl_div(F.log_softmax(logits, 1), F.log_softmax(ref, 1), log_target=True, reduction="batchmean"))
    return agree, kl


def quantizer_table(sim) -> list[dict]:
    """One row per activation quantizer: its name, the tensor it reads, that tensor's readers, its role."""
    rows = []
    for node in sim.net.graph.nodes:
        if node.op == "call_module" and node.target.startswith("act_quant_"):
            src = node.args[0]
            readers = sorted({u.target if u.op == "call_module" else u.name for u in node.users})
            rows.append(dict(q=node.target, tensor=src.name, readers=", ".join(readers)[:60],
                             role=sim.net.get_submodule(node.target).role))
    return rows


@torch.no_grad()
def channel_stats(gm, images: torch.Tensor, names: list[str], batch: int = 32) -> dict[str, tuple]:
    """Per-channel mean and std of every named Conv/Linear output on `images` (over batch and space)."""
    sums: dict[str, list] = {}
    hooks = []
    for name in names:
        def hook(module, inputs, out, name=name):
            x = out.transpose(0, 1).reshape(out.shape[1], -1).double()
            s = sums.setdefault(name, [0, 0.0, 0.0])
            s[0] += x.shape[1]
            s[1] = s[1] + x.sum(1)
            s[2] = s[2] + (x * x).sum(1)
        hooks.append(gm.get_submodule(name).register_forward_hook(hook))
    for i in range(0, len(images), batch):
        gm(images[i:i + batch])
    for h in hooks:
        h.remove()
    out = {}
    for name, (n, s1, s2) in sums.items():
        mean = s1 / n
        out[name] = (mean.float(), (s2 / n - mean * mean).clamp_min(0).sqrt().float())
    return out


def side_off(g: tuple, r: tuple, tol: float = 0.1) -> str:
    """Which end of gzsq's range is off from real's, by more than `tol` of real's width."""
    width = max(r[1] - r[0], 1e-12)
    notes = []
    if g[1] > r[1] + tol * width:
        notes.append("hi wide")
    elif g[1] < r[1] - tol * width:
        notes.append("hi clips")
    if g[0] < r[0] - tol * width:
        notes.append("lo wide")
    elif g[0] > r[0] + tol * width:
        notes.append("lo clips")
    return ", ".join(notes) or "ok"


def ratio(a: tuple, b: tuple) -> float:
    return (a[1] - a[0]) / max(b[1] - b[0], 1e-12)


def run_model(name: str, args) -> dict:
    t0 = time.perf_counter()
    setup = model_setup(name)
    model = load_model(name, setup["weights"])
    folded = fold_bn(model)
    real_a, real_b, ev, eval_what, n_eval = pick_images(setup, model, args.n_eval, args.seed)
    n = setup["n"]
    opts = SourceOptions(setting="bn-free", preset=args.preset, overrides=args.overrides)
    calib = {"gzsq": make_calibration("gzsq", folded, n, seed=args.seed, options=opts).images,
             "real A": real_a, "real B": real_b,
             "noise": make_calibration("gaussian", folded, n, seed=args.seed, options=opts).images}
    config = QuantConfig(w_bits=args.w_bits, a_bits=args.a_bits)
    fp32 = logits_of(folded, ev)
    sims = {k: quantize(model, v, config) for k, v in calib.items()}
    qrows = quantizer_table(sims["gzsq"])
    ranges = {k: {q: (m.lo, m.hi) for q, m in s.act_quantizers().items()} for k, s in sims.items()}
    totals = {k: compare(logits_of(s, ev), fp32) for k, s in sims.items()}
    # the same three sources at 8-bit activations, for context
    totals8 = {k: compare(logits_of(quantize(model, calib[k], QuantConfig(w_bits=8, a_bits=8)), ev), fp32)
               for k in calib}

    # contributions: gzsq's ranges, one tensor at a time replaced by real fold A's
    sim = sims["gzsq"]
    quantizers = sim.act_quantizers()
    base_agree, base_kl = totals["gzsq"]
    for row in qrows:
        q = quantizers[row["q"]]
        g, r = ranges["gzsq"][row["q"]], ranges["real A"][row["q"]]
        row.update(gzsq=g, realA=r, realB=ranges["real B"][row["q"]], noise=ranges["noise"][row["q"]],
                   ratio_gzsq=ratio(g, r), ratio_noise=ratio(ranges["noise"][row["q"]], r),
                   ratio_realB=ratio(ranges["real B"][row["q"]], r), side=side_off(g, r))
        if row["role"] == "input":  # its range is the model's pixel range whatever the source
            row.update(d_agree=0.0, d_kl=0.0)
            continue
        if args.quick:
            row.update(d_agree=float("nan"), d_kl=float("nan"))
            continue
        q.set_range(*r)
        agree, kl = compare(logits_of(sim, ev), fp32)
        q.set_range(*g)
        row.update(d_agree=agree - base_agree, d_kl=base_kl - kl)  # > 0: the real range helps
    # ranked by the change in agreement; on ties (one image is a coarse step) by the change in KL
    ranked = sorted((r for r in qrows if r["role"] != "input"), key=lambda r: (-r["d_agree"], -r["d_kl"]))
    cumulative = []
    for k in [k for k in (1, 3, 5, 10, 20) if k <= len(ranked) and not args.quick]:
        for row in ranked[:k]:
            quantizers[row["q"]].set_range(*row["realA"])
        cumulative.append((k, *compare(logits_of(sim, ev), fp32)))
        for row in ranked[:k]:
            quantizers[row["q"]].set_range(*row["gzsq"])

    # targets vs real statistics at every Conv/Linear output
    recipe = recipe_for(args.preset, args.overrides)
    t = recipe.targets
    targets = layer_targets(folded, t)
    layer_names = list(targets)
    real_stats = channel_stats(folded, real_a, layer_names)
    gz_stats = channel_stats(folded, calib["gzsq"], layer_names)
    trows = []
    for i, lname in enumerate(layer_names):
        tm, ts = targets[lname]
        rm, rs = real_stats[lname]
        gm_, gs = gz_stats[lname]
        corr = float(np.corrcoef(tm.numpy(), rm.numpy())[0, 1]) if len(tm) > 2 else float("nan")
        trows.append(dict(i=i, layer=lname, channels=len(tm),
                          std_target_real=float((ts / rs.clamp_min(1e-6)).median()),
                          std_gzsq_real=float((gs / rs.clamp_min(1e-6)).median()),
                          mean_corr=corr,
                          mean_err=float(((tm - rm).abs() / rs.clamp_min(1e-6)).median())))
    seconds = time.perf_counter() - t0
    return dict(model=name, eval_what=eval_what, n_eval=n_eval, n_calib=n, bits=(args.w_bits, args.a_bits),
                totals=totals, totals8=totals8, rows=qrows, ranked=ranked, cumulative=cumulative, trows=trows,
                seconds=seconds, seed=args.seed, preset=args.preset, overrides=args.overrides, quick=args.quick)


def fmt_range(r: tuple) -> str:
    return f"[{r[0]:.3g}, {r[1]:.3g}]"


def render(res: dict, command: str) -> str:
    w, a = res["bits"]
    tot, tot8 = res["totals"], res["totals8"]
    n_eval = res["n_eval"]
    lines = [f"# Calibration fidelity: {res['model']} (BN-free setting: BN folded)", "",
             f"Generated by `{command}` in {res['seconds'] / 60:.1f} min (seed {res['seed']}, gzsq preset "
             f"`{res['preset']}`" + (f" with {dict(res['overrides'])}" if res["overrides"] else "")
             + f", {res['n_calib']} calibration images per source).", "",
             f"Images: {res['eval_what']}. Simulated W{w}A{a} (reference placement, min/max observer, per-channel "
             f"weights); the network input's range is the model's pixel range for every source. One evaluation "
             f"image is {100 / n_eval:.2f} pt of agreement. KL = mean KL(FP32 softmax ‖ quantized softmax) over "
             "the evaluation images.", "",
             "## Totals on the evaluation subset", "",
             f"| ranges from | agreement W{w}A{a} | KL W{w}A{a} | agreement W8A8 | KL W8A8 |",
             "| --- | --- | --- | --- | --- |"]
    for k in ("gzsq", "real A", "real B", "noise"):
        a8 = f"{tot8[k][0]:.1f} %" if k in tot8 else "–"
        k8 = f"{tot8[k][1]:.4f}" if k in tot8 else "–"
        lines.append(f"| {k} | {tot[k][0]:.1f} % | {tot[k][1]:.4f} | {a8} | {k8} |")
    gap = tot["real A"][0] - tot["gzsq"][0]
    lines += ["", f"gzsq vs real fold A at W{w}A{a}: {-gap:+.1f} pt agreement "
              f"({-gap * n_eval / 100:+.0f} images), KL {tot['gzsq'][1]:.4f} vs {tot['real A'][1]:.4f}.", ""]

    ranked = res["ranked"]
    if res["quick"]:
        lines += ["(`--quick`: no one-tensor swaps.)", ""]
    harmful = [r for r in ranked if r["d_agree"] > 0]
    lines += [] if res["quick"] else ["## Which ranges make gzsq lose", "",
              "Each row: gzsq's ranges everywhere except this one tensor, which gets real fold A's range. "
              "Δagreement in pt (> 0: the real range is better), ΔKL = KL(gzsq) − KL(swapped) (> 0: better). "
              "Ranked by Δagreement, ties by ΔKL; the ten first:", "",
              "| tensor | read by | role | gzsq range | real A range | width gzsq/real | side off | "
              "Δagreement | ΔKL |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in ([] if res["quick"] else ranked[:10]):
        lines.append(f"| {r['tensor']} | {r['readers']} | {r['role']} | {fmt_range(r['gzsq'])} | "
                     f"{fmt_range(r['realA'])} | {r['ratio_gzsq']:.2f} | {r['side']} | {r['d_agree']:+.1f} | "
                     f"{r['d_kl']:+.4f} |")
    hurt = [r for r in ranked if r["d_agree"] < 0]
    lines += [] if res["quick"] else ["", f"Alone, the real range raises agreement on {len(harmful)} of {len(ranked)} tensors (by "
              f"{sum(r['d_agree'] for r in harmful):+.1f} pt summed), lowers it on {len(hurt)} "
              f"({sum(r['d_agree'] for r in hurt):+.1f} pt) and lowers the KL on "
              f"{sum(r['d_kl'] > 0 for r in ranked)}. Swapped together, in the order above "
              "(the order was chosen on these images, so this is an upper bound on what those ranges buy):", "",
              "| real ranges swapped in (first k above) | agreement | KL |", "| --- | --- | --- |",
              f"| 0 (all gzsq) | {tot['gzsq'][0]:.1f} % | {tot['gzsq'][1]:.4f} |"]
    for k, agree, kl in res["cumulative"]:
        lines.append(f"| {k} | {agree:.1f} % | {kl:.4f} |")
    if not res["quick"]:
        lines.append(f"| all (= real fold A) | {tot['real A'][0]:.1f} % | {tot['real A'][1]:.4f} |")

    rows = [r for r in res["rows"] if r["role"] != "input"]
    wide = sum(r["ratio_gzsq"] > 1.1 for r in rows)
    narrow = sum(r["ratio_gzsq"] < 0.9 for r in rows)
    third = max(1, len(rows) // 3)
    med = lambda xs: float(np.median(xs)) if xs else float("nan")  # noqa: E731
    lines += ["", "## Ranges, every quantized tensor", "",
              f"Width ratio to real fold A (median over tensors): gzsq {med([r['ratio_gzsq'] for r in rows]):.2f} "
              f"(first third {med([r['ratio_gzsq'] for r in rows[:third]]):.2f}, last third "
              f"{med([r['ratio_gzsq'] for r in rows[-third:]]):.2f}), noise {med([r['ratio_noise'] for r in rows]):.2f}, "
              f"real fold B {med([r['ratio_realB'] for r in rows]):.2f}. gzsq is more than 10 % wider than real "
              f"on {wide} of {len(rows)} tensors and more than 10 % narrower on {narrow}. "
              f"Plot: [{res['stem']}.png]({res['stem']}.png).", "",
              "| # | tensor | role | gzsq | real A | real B | noise | gzsq/real | noise/real | B/A | side off | "
              "Δagreement | ΔKL |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, r in enumerate(res["rows"]):
        lines.append(f"| {i} | {r['tensor']} | {r['role']} | {fmt_range(r['gzsq'])} | {fmt_range(r['realA'])} | "
                     f"{fmt_range(r['realB'])} | {fmt_range(r['noise'])} | {r['ratio_gzsq']:.2f} | "
                     f"{r['ratio_noise']:.2f} | {r['ratio_realB']:.2f} | {r['side']} | {r['d_agree']:+.1f} | "
                     f"{r['d_kl']:+.4f} |")
    tr = res["trows"]
    lines += ["", "## Targets from the weights vs real images' statistics (every Conv/Linear output)", "",
              "Per layer, medians over channels: target std / real std (the std gzsq asks for), gzsq images' "
              "std / real std (what the distilled images reach), |target mean − real mean| / real std, and the "
              "correlation across channels of target and real means.", "",
              f"Median over layers: target/real std {med([t['std_target_real'] for t in tr]):.2f} (last third "
              f"{med([t['std_target_real'] for t in tr[-max(1, len(tr) // 3):]]):.2f}); gzsq/real std "
              f"{med([t['std_gzsq_real'] for t in tr]):.2f} (last third "
              f"{med([t['std_gzsq_real'] for t in tr[-max(1, len(tr) // 3):]]):.2f}); mean correlation "
              f"{np.nanmedian([t['mean_corr'] for t in tr]):.2f}.", "",
              "| # | layer | C | target/real std | gzsq/real std | mean error / real std | mean corr |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for t in tr:
        lines.append(f"| {t['i']} | {t['layer']} | {t['channels']} | {t['std_target_real']:.2f} | "
                     f"{t['std_gzsq_real']:.2f} | {t['mean_err']:.2f} | {t['mean_corr']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["rows"] if r["role"] != "input"]
    x = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw=dict(height_ratios=[3, 2]))
    ax1.axhline(1, color="grey", lw=0.8)
    ax1.plot(x, [r["ratio_gzsq"] for r in rows], "o-", ms=3, label="gzsq / real A")
    ax1.plot(x, [r["ratio_noise"] for r in rows], "s-", ms=3, alpha=0.7, label="noise / real A")
    ax1.plot(x, [r["ratio_realB"] for r in rows], "^-", ms=3, alpha=0.7, label="real B / real A")
    ax1.set_yscale("log")
    ax1.set_ylabel("range width ratio")
    ax1.legend(fontsize=8)
    w, a = res["bits"]
    ax1.set_title(f"{res['model']}: calibrated activation ranges vs real images (W{w}A{a} simulated)")
    ax2.bar(x, [r["d_agree"] for r in rows], color=["C3" if r["d_agree"] > 0 else "C0" for r in rows])
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set_ylabel("Δ agreement (pt)\nwith real range")
    ax2.set_xlabel("quantized tensor, in forward order")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="efficientnet-lite0,mobilenet-v2,cifar10-resnet20-nf")
    p.add_argument("--w-bits", type=int, default=8)
    p.add_argument("--a-bits", type=int, default=6)
    p.add_argument("--n-eval", type=int, default=0, help="evaluation subset size (default: 150 ImageNet, 2000 CIFAR)")
    p.add_argument("--preset", default="default")
    p.add_argument("--overrides", default="", help="gzsq settings replacing the preset's, e.g. "
                                                   "depthwise_coherence=0.5,distill_pixels=524288")
    p.add_argument("--tag", default="", help="output name suffix: results/fidelity/<model>@<tag>.md")
    p.add_argument("--quick", action="store_true", help="ranges, targets and totals only (no one-tensor swaps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "results/fidelity"))
    args = p.parse_args(argv)
    args.overrides = parse_overrides(args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python experiments/fidelity_report.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in args.models.split(","):
        n_eval = args.n_eval or (2000 if name.startswith("cifar10-") else 150)
        res = run_model(name, argparse.Namespace(**{**vars(args), "n_eval": n_eval}))
        stem = res["stem"] = f"{name}@{args.tag}" if args.tag else name
        atomic_write_text(out / f"{stem}.md", render(res, command.strip()))
        plot(res, out / f"{stem}.png")
        summary = {k: res[k] for k in ("model", "n_eval", "n_calib", "bits", "totals", "totals8", "cumulative",
                                        "seconds")}
        summary["top"] = [{k: r[k] for k in ("tensor", "role", "gzsq", "realA", "ratio_gzsq", "side", "d_agree",
                                             "d_kl")} for r in res["ranked"][:10]]
        atomic_write_text(out / f"{stem}.json", json.dumps(summary, indent=1) + "\n")
        print(f"{name}: {res['seconds']:.0f} s; agreement gzsq {res['totals']['gzsq'][0]:.1f} real A "
              f"{res['totals']['real A'][0]:.1f} noise {res['totals']['noise'][0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
