"""Low-bit 224×224 models through the main job, with its defaults: `gzsq quantize MODEL -o OUT.onnx --w-bits W
--a-bits A --eval-data ../shared/data/imagenet-sample --seed S --threads 1` (block reconstruction is on by
default below 8 bits), and the same command with `--reconstruct none` (round to nearest) for the time it saves.

Each cell runs the real command line in a subprocess, keeps its report (.report.json/.md; not the 1.2 MB
encodings file) under results/lowbit/imagenet/<cell>/, appends one row to results/lowbit/imagenet.csv (the command, ONNX
Runtime's and the simulator's top-1 on the 500-image sample, agreement with FP32, seconds) and rewrites
results/lowbit/imagenet.md from the CSV.

    python experiments/lowbit_imagenet.py --models efficientnet-lite0,mobilenet-v2 --bits 4,8 --seeds 0 1 2
    python experiments/lowbit_imagenet.py --models efficientnet-lite0 --bits 4,8 --seeds 0 --reconstruct none
    python experiments/lowbit_imagenet.py --table      # only rewrite imagenet.md from imagenet.csv
    python experiments/lowbit_imagenet.py --name imagenet_block_units --seeds 0   # another set of rows
    python experiments/lowbit_imagenet.py --name imagenet_local --preset local --seeds 0   # another gzsq preset
    python experiments/lowbit_imagenet.py --name imagenet_local_fl8 --preset local --first-last-8bit --seeds 0

`--name NAME` keeps a set of runs apart from the rows above (e.g. the same commands on a later version of the
code): results/lowbit/NAME.csv, NAME.md and NAME/<cell>/, with `--note TEXT` at the head of NAME.md.
A cell already in the CSV is skipped, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from assets import IMAGENET_SAMPLE, MOBILENET_V2
from lowbit_quantize import append_row, run_quantize

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "lowbit"
CELLS = OUT / "imagenet"
CSV = OUT / "imagenet.csv"
DATA = IMAGENET_SAMPLE
WEIGHTS = {"mobilenet-v2": MOBILENET_V2}
GOAL = {(4, 8): 3.0, (6, 6): 1.5}  # the goals: top-1 ≥ FP32 − this many points
FIELDS = ["model", "w_bits", "a_bits", "seed", "reconstruct", "images", "fp32_top1", "onnxruntime_top1",
          "simulator_top1", "agreement", "runtime_matches_simulator", "seconds_calibration", "seconds_reconstruct",
          "seconds_evaluate", "seconds_total", "command"]


def cell_name(model, w, a, seed, reconstruct) -> str:
    return f"{model}_w{w}a{a}_s{seed}_{reconstruct}"


def set_name(name: str) -> None:
    """Write to results/lowbit/NAME.csv, NAME.md and NAME/ instead of imagenet.*."""
    global CELLS, CSV
    CELLS, CSV = OUT / name, OUT / f"{name}.csv"


def read_rows() -> list[dict]:
    if not CSV.exists():
        return []
    with CSV.open() as f:
        return list(csv.DictReader(f))


# --preset: the gzsq recipe every cell of this run uses. The rows of imagenet.csv ran when the command's default
# was the `default` preset; it is now `auto` (local targets on these depthwise-separable models).
PRESET = {"name": "auto"}
FIRST_LAST_8BIT = {"on": False}  # --first-last-8bit: every cell of this run keeps its first and last layer at 8 bits


def run_cell(model, w, a, seed, reconstruct) -> dict:
    name = cell_name(model, w, a, seed, reconstruct)
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / f"{name}.onnx"
        cmd = ["gzsq", "quantize", model, "-o", str(out), "--w-bits", str(w), "--a-bits", str(a),
               "--eval-data", str(DATA), "--seed", str(seed), "--threads", "1", "--json"]
        if model in WEIGHTS:
            cmd[3:3] = ["--weights", str(WEIGHTS[model])]
        if reconstruct != "default":
            cmd += ["--reconstruct", reconstruct]
        if PRESET["name"] != "auto":
            cmd += ["--preset", PRESET["name"]]
        if FIRST_LAST_8BIT["on"]:
            cmd.append("--first-last-8bit")
        # the encodings file (1.2 MB here) is not kept
        report, seconds, shown = run_quantize(cmd, name, Path(work), CELLS / name, (".report.json", ".report.md"))
    e = report["evaluation"]
    return {"model": model, "w_bits": w, "a_bits": a, "seed": seed, "reconstruct": reconstruct, "images": e["images"],
            "fp32_top1": e["fp32_top1"], "onnxruntime_top1": e["int8_top1"], "simulator_top1": e["simulator_top1"],
            "agreement": e["agreement"], "runtime_matches_simulator": e["runtime_matches_simulator"],
            "seconds_calibration": report["seconds"]["calibration_data"],
            "seconds_reconstruct": report["seconds"].get("reconstruct", 0.0),
            "seconds_evaluate": report["seconds"].get("evaluate", 0.0), "seconds_total": round(seconds, 1),
            "command": shown}


def _stat(rows, key, digits=1) -> str:
    vals = [float(r[key]) for r in rows]
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.{digits}f}"
    std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_table(note: str | None = None) -> None:
    rows = read_rows()
    if not rows:
        return
    md = CSV.with_suffix(".md")
    if note is None and md.exists() and CSV.stem != "imagenet":  # keep the note written with the first rows
        head = md.read_text().split("\n\nSummary")[0].split("\n\n", 1)
        note = head[1] if len(head) > 1 else ""
    lines = ["# Low-bit 224×224 models through `gzsq quantize`, default settings", ""]
    if CSV.stem != "imagenet":
        lines[0] = f"# Low-bit 224×224 models through `gzsq quantize`: {CSV.stem}"
        lines += [note or "", "", "Summary (mean ± std over the seeds listed):", ""]
    else:
        lines += [
             "Generated by `python experiments/lowbit_imagenet.py` from `imagenet.csv` (every run's full command is "
             "there; each run's report is in `imagenet/<run>/`). The command is the main job with "
             "its defaults (calibration: 64 images distilled from the weights, setting bn; block reconstruction below "
             "8 bits, MSE-clipped starting ranges), `--threads 1`, on a 2-core machine with another one-thread job "
             "running. ONNX Runtime runs the written file on the 500-image ImageNet sample; the simulator runs the "
             "same encodings in PyTorch on the same images; agreement: share of images where the quantized model "
             "predicts the FP32 model's class. Seconds: wall-clock of the whole command (distillation, ranges, "
             "reconstruction, export, FP32 and quantized evaluation). The runs used the code of commit e4eb3fa, in "
             "this order: `--models efficientnet-lite0,mobilenet-v2 --bits 4,8 --seeds 0`, the same with "
             "`--reconstruct none`, `--bits 4,8 --seeds 1 2`, `--bits 6,6 --seeds 0` and with `--reconstruct none`.",
             "",
             "Summary (mean ± std over the seeds listed):", ""]
    lines += ["| model | W/A | rounding | FP32 top-1 | ONNX Runtime top-1 | goal | agreement | total s | seeds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], int(r["w_bits"]), int(r["a_bits"]), r["reconstruct"]), []).append(r)
    for (model, w, a, rec), rs in groups.items():
        fp32 = float(rs[0]["fp32_top1"])
        goal = GOAL.get((w, a))
        lines.append(f"| {model} | W{w}A{a} | {'round to nearest' if rec == 'none' else 'block reconstruction'} | "
                     f"{fp32:.1f} | {_stat(rs, 'onnxruntime_top1')} | {'–' if goal is None else f'≥ {fp32 - goal:.1f}'} | "
                     f"{_stat(rs, 'agreement')} | {_stat(rs, 'seconds_total', 0)} | {','.join(r['seed'] for r in rs)} |")
    lines += ["", "Every run:", "",
             "| model | W/A | seed | rounding | FP32 top-1 | ONNX Runtime top-1 | simulator top-1 | goal | met | "
             "ORT == sim (% images) | agreement | reconstruct s | total s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        w, a = int(r["w_bits"]), int(r["a_bits"])
        fp32, ort = float(r["fp32_top1"]), float(r["onnxruntime_top1"])
        goal = GOAL.get((w, a))
        rounding = "round to nearest" if r["reconstruct"] == "none" else "block reconstruction"
        met = "–" if goal is None or r["reconstruct"] == "none" else ("yes" if ort >= fp32 - goal else "**no**")
        goal_text = "–" if goal is None else f"≥ {fp32 - goal:.1f}"
        lines.append(f"| {r['model']} | W{w}A{a} | {r['seed']} | {rounding} | {fp32:.1f} | {ort:.1f} | "
                     f"{float(r['simulator_top1']):.1f} | {goal_text} | {met} | {r['runtime_matches_simulator']} | "
                     f"{r['agreement']} | {float(r['seconds_reconstruct']):.0f} | {float(r['seconds_total']):.0f} |")
    md.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="efficientnet-lite0")
    p.add_argument("--bits", nargs="+", default=["4,8"], help="W,A pairs")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--reconstruct", default="default", help="default (block below 8 bits), none, block, adaround")
    p.add_argument("--table", action="store_true", help="only rewrite imagenet.md from imagenet.csv")
    p.add_argument("--name", default="imagenet", help="results/lowbit/NAME.csv, NAME.md, NAME/ (default imagenet)")
    p.add_argument("--note", default=None, help="the text under NAME.md's title (with --name)")
    p.add_argument("--preset", default="auto", help="gzsq preset of every cell (use with --name: cells are named "
                                                       "without it)")
    p.add_argument("--first-last-8bit", action="store_true",
                   help="keep the first and last layer at 8 bits in every cell (use with --name: cells are named without it)")
    args = p.parse_args()
    PRESET["name"] = args.preset
    FIRST_LAST_8BIT["on"] = args.first_last_8bit
    OUT.mkdir(parents=True, exist_ok=True)
    set_name(args.name)
    if args.table:
        write_table(args.note)
        return
    done = {cell_name(r["model"], r["w_bits"], r["a_bits"], r["seed"], r["reconstruct"]) for r in read_rows()}
    for seed in args.seeds:
        for model in args.models.split(","):
            for bits in args.bits:
                w, a = map(int, bits.split(","))
                name = cell_name(model, w, a, seed, args.reconstruct)
                if name in done:
                    continue
                row = run_cell(model, w, a, seed, args.reconstruct)
                append_row(CSV, FIELDS, row)
                write_table(args.note)
                print(f"{name}: ORT {row['onnxruntime_top1']} sim {row['simulator_top1']} (FP32 {row['fp32_top1']}) "
                      f"agreement {row['agreement']} {row['seconds_total']} s", flush=True)


if __name__ == "__main__":
    main()
