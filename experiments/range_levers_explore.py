"""Scouting run for results/ablation_bnfree.md: range levers on the BN-free CIFAR nets, one seed, 2 000 images.

    python experiments/range_levers_explore.py cifar10-vgg7-nf,cifar10-resnet20-nf 0 > results/range_levers_explore.txt

Agreement % with FP32 on fidelity_report.py's evaluation subset (every 5th test image), ranges from 256 images
of each source: real (fold A), noise, gzsq (preset default), gzsq40 (preset longer), gzsq with the percentile
and MSE observers, gzsq's 256 + noise's 256 images, the first 128 gzsq + first 128 noise images, and gzsq's
min/max ranges scaled: `gzsqx1.5` is ×1.5; `gzsqx2.0` is applied on top of it, so ×3.0 of gzsq's ranges.
Only to choose which levers to measure in full (experiments/ablation_bnfree.sh).
"""
import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
torch.set_num_threads(1)
from pathlib import Path
from fidelity_report import model_setup, pick_images, logits_of, compare
from gzsq.models import load_model
from gzsq.fold import fold_bn
from gzsq.config import QuantConfig
from gzsq.quantization.sim import quantize
from gzsq.sources import SourceOptions, make_calibration
shared = Path("/work/shared")
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
for name in sys.argv[1].split(","):
    setup = model_setup(name, shared)
    model = load_model(name, setup["weights"]); folded = fold_bn(model)
    ra, rb, ev, _, _ = pick_images(setup, model, 2000, seed)
    opts = SourceOptions(setting="bn-free", preset="default")
    t = time.time()
    g = make_calibration("gzsq", folded, 256, seed=seed, options=opts).images
    tg = time.time() - t
    g40 = make_calibration("gzsq", folded, 256, seed=seed, options=SourceOptions(setting="bn-free", preset="longer")).images
    n = make_calibration("gaussian", folded, 256, seed=seed, options=opts).images
    fp = logits_of(folded, ev)
    cal = {"real": (ra, "minmax"), "noise": (n, "minmax"), "gzsq": (g, "minmax"), "gzsq40": (g40, "minmax"),
           "gzsq/pct": (g, "percentile"), "gzsq/mse": (g, "mse"),
           "gzsq+noise": (torch.cat([g, n]), "minmax"), "gzsq+noise/mse": (torch.cat([g, n]), "mse"),
           "gzsq128+noise128": (torch.cat([g[:128], n[:128]]), "minmax")}
    print(name, f"gzsq distill {tg:.0f}s", flush=True)
    for w, a in [(8, 8), (6, 6), (4, 8), (4, 4)]:
        out = []
        for k, (imgs, obs) in cal.items():
            sim = quantize(model, imgs, QuantConfig(w_bits=w, a_bits=a, observer=obs))
            out.append(f"{k} {compare(logits_of(sim, ev), fp)[0]:.2f}")
            if k == "gzsq":
                for f in (1.5, 2.0):
                    for q in sim.act_quantizers().values():
                        if q.role != "input": q.set_range(q.lo * f, q.hi * f)
                    out.append(f"gzsqx{f} {compare(logits_of(sim, ev), fp)[0]:.2f}")
        print(f"  W{w}A{a}: " + " | ".join(out), flush=True)
