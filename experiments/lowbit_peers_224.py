"""Do the images matter at 224×224 and low bits? The W4A8 main job with block reconstruction on EfficientNet-Lite0
and MobileNetV2, calibrated on gzsq's distilled images, on Gaussian noise and on real ImageNet images.

    python experiments/lowbit_peers_224.py --models efficientnet-lite0,mobilenet-v2 --calib gzsq gaussian real --seeds 0
    python experiments/lowbit_peers_224.py --table     # only rewrite the table from the CSV
    python experiments/lowbit_peers_224.py --first-last-8bit --models mobilenet-v2 --calib gzsq real --seeds 0

With `--first-last-8bit` every command gets that flag (the first conv, the classifier and their inputs at 8 bits,
the published anchors' convention) and the rows go to imagenet_peers_fl8.csv / .md / imagenet_peers_fl8/ instead.
`--tag T` sends them to imagenet_peers_T.* (rows made by another version of the command's defaults).

Every cell is `gzsq quantize MODEL -o X.onnx --w-bits 4 --a-bits 8 --setting bn-free --calib SOURCE --seed S
--reconstruct-loss LOSS --threads 1 --json` (64 calibration images, block reconstruction, the defaults otherwise;
`gzsq` is the default preset `auto`; rows from before `--loss` existed name no loss on their commands: they ran
mse, the default then), evaluated by ONNX Runtime on the written file. `gzsq` and `gaussian` are evaluated on all 500 images
of ../shared/data/imagenet-sample. `real` is never evaluated on its own calibration images: as in
experiments/imagenet_int8.py the sample is split into even and odd rows, 64 images of one fold (drawn by the seed)
calibrate and the other fold is evaluated, both ways, and the two halves' counts are added, so every source is
measured on the same 500 images (the real cell is two quantize runs).

Rows go to results/lowbit/imagenet_peers.csv (each run's command; reports in imagenet_peers/<cell>/); a cell
already there is skipped. results/lowbit/imagenet_peers.md is rewritten after every cell.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
from assets import IMAGENET_SAMPLE, MOBILENET_V2  # noqa: E402
from imagenet_int8 import make_folds  # noqa: E402
from lowbit_quantize import append_row, run_quantize  # noqa: E402

from gzsq.atomic import atomic_write_text  # noqa: E402

OUT = ROOT / "results" / "lowbit"
CELLS = OUT / "imagenet_peers"
CSV = OUT / "imagenet_peers.csv"
WEIGHTS = {"mobilenet-v2": MOBILENET_V2}
W_BITS, A_BITS = 4, 8
LOSS_TAGS = {"mse": "", "channel-normalized": "_cn", "residual-normalized": "_rn"}
FIELDS = ["model", "calib", "seed", "loss", "images", "fp32_top1", "onnxruntime_top1", "simulator_top1", "agreement",
          "runtime_matches_simulator", "seconds_reconstruct", "seconds_total", "commands"]


FIRST_LAST_8BIT = False  # set from --first-last-8bit in main(); picks the flag and the fl8 files


def use_files(tag: str, first_last_8bit: bool) -> None:
    global FIRST_LAST_8BIT, CELLS, CSV
    FIRST_LAST_8BIT, CELLS, CSV = first_last_8bit, OUT / f"imagenet_peers_{tag}", OUT / f"imagenet_peers_{tag}.csv"


def cell_name(model: str, calib: str, seed: int, loss: str, fold: str | None = None) -> str:
    return (f"{model}_w{W_BITS}a{A_BITS}{'_fl8' if FIRST_LAST_8BIT else ''}_{calib}_s{seed}{LOSS_TAGS[loss]}"
            + (f"_fold{fold}" if fold else ""))


def quantize_once(model: str, calib: str, seed: int, loss: str, work: Path, eval_data: Path,
                  calib_data: Path | None, fold: str | None) -> tuple[dict, float, str]:
    name = cell_name(model, calib, seed, loss, fold)
    cmd = ["gzsq", "quantize", model, "-o", str(work / f"{name}.onnx"), "--w-bits", str(W_BITS),
           "--a-bits", str(A_BITS), "--setting", "bn-free", "--calib", calib, "--seed", str(seed),
           "--reconstruct-loss", loss,
           "--eval-data", str(eval_data), "--threads", "1", "--json"]
    if model in WEIGHTS:
        cmd[3:3] = ["--weights", str(WEIGHTS[model])]
    if calib_data is not None:
        cmd += ["--calib-data", str(calib_data)]
    if FIRST_LAST_8BIT:
        cmd.append("--first-last-8bit")
    report, seconds, shown = run_quantize(cmd, name, work, CELLS / cell_name(model, calib, seed, loss),
                                          (".report.json", ".report.md"))
    return report, seconds, shown.replace(str(work), "$TMP")


def run_cell(model: str, calib: str, seed: int, loss: str) -> dict:
    """One row: the whole sample's counts (for `real`, its two folds' counts added)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if calib == "real":
            folds = make_folds(work)
            plans = [("A", folds["B"], folds["A"]), ("B", folds["A"], folds["B"])]  # (fold calibrating, eval, calib)
        else:
            plans = [(None, IMAGENET_SAMPLE, None)]
        runs = [quantize_once(model, calib, seed, loss, work, ev, cd, fold) for fold, ev, cd in plans]
    images = sum(r["evaluation"]["images"] for r, _, _ in runs)

    def pooled(key: str) -> float:  # a percentage over the whole sample from the folds' percentages
        return round(sum(r["evaluation"][key] * r["evaluation"]["images"] for r, _, _ in runs) / images, 2)

    return {"model": model, "calib": calib, "seed": seed, "loss": loss, "images": images, "fp32_top1": pooled("fp32_top1"),
            "onnxruntime_top1": pooled("int8_top1"), "simulator_top1": pooled("simulator_top1"),
            "agreement": pooled("agreement"), "runtime_matches_simulator": pooled("runtime_matches_simulator"),
            "seconds_reconstruct": round(sum(r["seconds"].get("reconstruct", 0.0) for r, _, _ in runs), 1),
            "seconds_total": round(sum(s for _, s, _ in runs), 1), "commands": " ; ".join(c for _, _, c in runs)}


def read_rows() -> list[dict]:
    if not CSV.exists():
        return []
    with CSV.open() as f:
        return list(csv.DictReader(f))


def _stat(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def write_table() -> None:
    rows = read_rows()
    if not rows:
        return
    title = "W4A8" + (", first and last layers at 8 bits," if FIRST_LAST_8BIT else "")
    lines = [f"# Do the images matter at 224×224? {title} with block reconstruction on three calibration sources", "",
             "Generated by `python experiments/lowbit_peers_224.py` (its docstring has the protocol; every run's "
             f"command is in `{CSV.name}`, each run's report in `{CELLS.name}/<cell>/`). ONNX Runtime top-1 "
             "and agreement with FP32 on the written file, over the 500-image ImageNet sample (`real`: two folds, "
             "each calibrated on 64 images of the other). One image is 0.2 pt. Seconds: the whole command(s), one "
             "thread, on a 2-core machine with another one-thread job running.", "",
             "| model | calibration | reconstruction loss | FP32 top-1 | ONNX Runtime top-1 | per seed | agreement | simulator top-1 | "
             "seeds | total s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["calib"], r["loss"]), []).append(r)
    for (model, calib, loss), rs in sorted(groups.items()):
        f = lambda key: [float(r[key]) for r in rs]  # noqa: E731
        lines.append(f"| {model} | {calib} | {loss} | {_stat(f('fp32_top1'))} | {_stat(f('onnxruntime_top1'))} | "
                     f"{' / '.join(f'{v:.1f}' for v in f('onnxruntime_top1'))} | {_stat(f('agreement'))} | "
                     f"{_stat(f('simulator_top1'))} | {','.join(r['seed'] for r in rs)} | {_stat(f('seconds_total'))} |")
    atomic_write_text(CSV.with_suffix(".md"), "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="efficientnet-lite0,mobilenet-v2")
    p.add_argument("--calib", nargs="+", default=["gzsq", "gaussian", "real"], choices=["gzsq", "gaussian", "real"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--loss", default="residual-normalized", choices=sorted(LOSS_TAGS),
                   help="--reconstruct-loss, named on every command (rows before it existed ran mse)")
    p.add_argument("--first-last-8bit", action="store_true",
                   help="pass --first-last-8bit to every command; rows go to imagenet_peers_fl8.*")
    p.add_argument("--tag", help="rows go to imagenet_peers_TAG.* (default: none, or fl8 with --first-last-8bit)")
    p.add_argument("--table", action="store_true", help="only rewrite the table from the CSV")
    args = p.parse_args()
    if args.first_last_8bit or args.tag:
        use_files(args.tag or "fl8", args.first_last_8bit)
    if not args.table:
        done = {(r["model"], r["calib"], int(r["seed"]), r["loss"]) for r in read_rows()}
        for seed in args.seeds:
            for model in args.models.split(","):
                for calib in args.calib:
                    if (model, calib, seed, args.loss) in done:
                        continue
                    row = run_cell(model, calib, seed, args.loss)
                    append_row(CSV, FIELDS, row)
                    write_table()
                    print(f"{cell_name(model, calib, seed, args.loss)}: ORT {row['onnxruntime_top1']} (FP32 {row['fp32_top1']}) "
                          f"agreement {row['agreement']} {row['seconds_total']} s", flush=True)
    write_table()


if __name__ == "__main__":
    main()
