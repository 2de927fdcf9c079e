"""Low-bit models through the main job: `gzsq quantize MODEL --w-bits W --a-bits A` (reconstruction on by
default below 8 bits), evaluated by ONNX Runtime on the written file and by the simulator on the same images.

Each cell runs the real command line in a subprocess (torch and ONNX Runtime on one thread), keeps the
report (.report.json/.md) and the encodings file under results/lowbit/<cell>/, and appends one row
to results/lowbit/runs.csv; results/lowbit/README.md is rewritten from the CSV after every cell, with
results/lowbit/sweeps.txt (which commands and commits made the rows; kept by hand) in its header.

    python experiments/lowbit_quantize.py --models cifar10-resnet20 --bits 4,8 --seeds 0
    python experiments/lowbit_quantize.py --models cifar10-resnet20,cifar10-resnet32,cifar10-resnet44 \\
        --bits 4,4 4,8 --seeds 0 1 2 --first-last-8bit both
    python experiments/lowbit_quantize.py --table      # only rewrite README.md from runs.csv

A cell already in runs.csv is skipped, so an interrupted sweep resumes where it stopped. gzsq cells are named by
the preset their command used (`gzsq-default`, `gzsq-half-local`...: `--preset`, or what `auto` picks).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
from assets import CIFAR_RESNETS, CIFAR_TEST, CIFAR_TRAIN, IMAGENET_SAMPLE, SHARED  # noqa: E402
OUT = ROOT / "results" / "lowbit"
CSV = OUT / "runs.csv"
WEIGHTS = CIFAR_RESNETS
EVAL = {"cifar10": CIFAR_TEST, "imagenet": IMAGENET_SAMPLE}
FIELDS = ["model", "w_bits", "a_bits", "first_last_8bit", "calib", "seed", "reconstruct", "iters", "images",
          "fp32_top1", "onnxruntime_top1", "simulator_top1", "agreement", "runtime_matches_simulator",
          "seconds_calibration", "seconds_reconstruct", "seconds_total", "command"]


def cell_name(model, w, a, fl8, calib, seed, reconstruct, iters) -> str:
    return f"{model}_w{w}a{a}{'_fl8' if fl8 else ''}_{calib}_s{seed}_{reconstruct}{iters}"


def done_cells() -> set[str]:
    if not CSV.exists():
        return set()
    with CSV.open() as f:
        return {cell_name(r["model"], r["w_bits"], r["a_bits"], r["first_last_8bit"] == "True", r["calib"],
                          r["seed"], r["reconstruct"], r["iters"]) for r in csv.DictReader(f)}


def run_quantize(cmd: list[str], name: str, work: Path, keep: Path, suffixes) -> tuple[dict, float, str]:
    """Run `gzsq quantize` (cmd[0] == "gzsq", writing OUT = work/NAME.onnx) in a subprocess; copy the outputs
    with `suffixes` that exist to `keep`; → (its JSON report, wall seconds, the command as shown in tables)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gzsq.cli", *cmd[1:]], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    keep.mkdir(parents=True, exist_ok=True)
    for suffix in suffixes:
        if (work / f"{name}{suffix}").exists():
            shutil.copy(work / f"{name}{suffix}", keep / f"{name}{suffix}")
    shown = " ".join(shlex.quote(c).replace(str(SHARED), "../shared") for c in cmd)
    shown = shown.replace(str(work / f"{name}.onnx"), "OUT.onnx")
    return json.loads(proc.stdout.strip().splitlines()[-1]), seconds, shown


def append_row(path: Path, fields: list[str], row: dict) -> None:
    """One row onto a results CSV, with the header when the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow(row)


def grouped_rows(path: Path, keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """A results CSV's rows grouped by the values of `keys`, in file order (empty when there is no file)."""
    if not path.exists():
        return {}
    groups: dict[tuple, list[dict]] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def calib_label(model: str, calib: str, preset: str | None, reconstruct: str, a_bits: int) -> str:
    """The calibration column: the source, and for gzsq the preset the command uses (`--preset`, or what `auto`
    picks for this model in a job that does or does not reconstruct, at these activation bits), as its report
    names it."""
    if calib != "gzsq":
        return calib
    if preset is None:
        import gzsq
        from gzsq.config import ImagesFor
        from gzsq.sources.gzsq import resolve_preset

        net = gzsq.load_model(model, str(WEIGHTS[model])) if model in WEIGHTS else gzsq.load_model(model)
        preset = resolve_preset("auto", net, ImagesFor(a_bits, reconstructing=reconstruct != "none"))
    return f"gzsq-{preset}"


# --reconstruct's suffix names the command's --reconstruct-loss; no suffix is mse, written out so that a row's
# command means the same whatever the command's default loss.
LOSS_SUFFIXES = {"-cn": "channel-normalized", "-rn": "residual-normalized"}


def split_reconstruct(reconstruct: str) -> tuple[str, str | None]:
    """'block-rn' → ('block', 'residual-normalized'); 'block' → ('block', 'mse'); 'none' → ('none', None)."""
    for suffix, loss in LOSS_SUFFIXES.items():
        if reconstruct.endswith(suffix):
            return reconstruct.removesuffix(suffix), loss
    return reconstruct, None if reconstruct == "none" else "mse"


def run_cell(model, w, a, fl8, calib, seed, reconstruct, iters, preset=None, label=None) -> dict:
    label = label or calib_label(model, calib, preset, reconstruct, a)
    name = cell_name(model, w, a, fl8, label, seed, reconstruct, iters)
    method, loss = split_reconstruct(reconstruct)
    data = EVAL["cifar10" if model.startswith("cifar10") else "imagenet"]
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / f"{name}.onnx"
        cmd = ["gzsq", "quantize", model, "-o", str(out), "--w-bits", str(w), "--a-bits", str(a), "--calib", calib,
               "--setting", "bn" if calib == "zeroq" else "bn-free", "--seed", str(seed),
               "--reconstruct", method, "--reconstruct-iters", str(iters),
               "--eval-data", str(data), "--threads", "1", "--json"]
        if model in WEIGHTS:
            cmd[3:3] = ["--weights", str(WEIGHTS[model])]
        if calib == "real":
            cmd += ["--calib-data", str(CIFAR_TRAIN)]
        if fl8:
            cmd.append("--first-last-8bit")
        if loss is not None:
            cmd += ["--reconstruct-loss", loss]
        if preset is not None:
            cmd += ["--preset", preset]
        report, seconds, shown = run_quantize(cmd, name, Path(work), OUT / name,
                                              (".report.json", ".report.md", ".encodings.json"))
    if report["calib"] != label:
        raise SystemExit(f"{name}: the report says calib {report['calib']!r}, expected {label!r}")
    e = report["evaluation"]
    ran = "measured_by" not in e  # else ONNX Runtime cannot load the file (the report says why): left empty
    return {"model": model, "w_bits": w, "a_bits": a, "first_last_8bit": fl8, "calib": label, "seed": seed,
            "reconstruct": reconstruct, "iters": iters, "images": e["images"], "fp32_top1": e["fp32_top1"],
            "onnxruntime_top1": e["int8_top1"] if ran else "", "simulator_top1": e["simulator_top1"],
            "agreement": e["agreement"], "runtime_matches_simulator": e["runtime_matches_simulator"] if ran else "",
            "seconds_calibration": report["seconds"]["calibration_data"],
            "seconds_reconstruct": report["seconds"].get("reconstruct", 0.0), "seconds_total": round(seconds, 1),
            "command": shown}


def write_table() -> None:
    if not CSV.exists():
        return
    groups = grouped_rows(CSV, ("model", "w_bits", "a_bits", "first_last_8bit", "calib", "reconstruct", "iters"))

    def stat(rs, key):
        if any(r[key] == "" for r in rs):
            return "not run"
        vals = [float(r[key]) for r in rs]
        mean = sum(vals) / len(vals)
        if len(vals) == 1:
            return f"{mean:.2f}"
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        return f"{mean:.2f} ± {std:.2f}"

    lines = ["# Low-bit models through `gzsq quantize` (ONNX file written from the simulator)", "",
             "Generated by `python experiments/lowbit_quantize.py` (every cell's command is in `runs.csv`; each "
             "cell's report and encodings file are in its folder; `sweep.log` is the runs' output). "
             + ((OUT / "sweeps.txt").read_text().strip() + " " if (OUT / "sweeps.txt").exists() else "") +
             "ONNX Runtime runs the written file on the "
             "evaluation images (CIFAR-10: all 10 000 test images; ImageNet: the 500-image sample); the simulator "
             "runs the same encodings in PyTorch on the same images. Setting bn-free: the calibration source "
             "sees only the BN-folded network (`zeroq` rows: setting bn, as ZeroQ reads the BN statistics; `real`: "
             "256 CIFAR-10 training images). Cells: mean ± std over the seeds listed "
             "(the seed draws the calibration images and the reconstruction's batches). Seconds: wall-clock of "
             "the whole command, one thread, on a 2-core machine with another one-thread job running. `not run`: "
             "ONNX Runtime could not load that file when it ran (its report says why: it has no MaxPool on 4-bit "
             "tensors), and the agreement is the simulator's. The export now writes a 4-bit activation read from a "
             "max-pool in the 8-bit container, and ONNX Runtime runs those files (w4a4_ort.txt).", "",
             "| model | W/A | first/last 8-bit | calibration | reconstruct | FP32 top-1 | ONNX Runtime top-1 | "
             "simulator top-1 | ORT − sim (pt) | ORT == sim (% images) | agreement with FP32 | seeds | "
             "reconstruct s | total s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (model, w, a, fl8, calib, rec, iters), rs in groups.items():
        ran = all(r["onnxruntime_top1"] != "" for r in rs)
        diff = f"≤ {max(abs(float(r['onnxruntime_top1']) - float(r['simulator_top1'])) for r in rs):.2f}" if ran else "–"
        lines.append(f"| {model} | W{w}A{a} | {'yes' if fl8 == 'True' else 'no'} | {calib} | "
                     f"{rec} ({iters} steps) | {stat(rs, 'fp32_top1')} | {stat(rs, 'onnxruntime_top1')} | "
                     f"{stat(rs, 'simulator_top1')} | {diff} | {stat(rs, 'runtime_matches_simulator')} | "
                     f"{stat(rs, 'agreement')} | {','.join(r['seed'] for r in rs)} | "
                     f"{stat(rs, 'seconds_reconstruct')} | {stat(rs, 'seconds_total')} |")
    (OUT / "README.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="cifar10-resnet20")
    p.add_argument("--bits", nargs="+", default=["4,8"], help="W,A pairs")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--calib", nargs="+", default=["gzsq"])
    p.add_argument("--preset", help="gzsq preset passed to the command (default: none, so `auto` picks)")
    p.add_argument("--first-last-8bit", choices=["no", "yes", "both"], default="no")
    p.add_argument("--reconstruct", default="block",
                   help="the command's --reconstruct; block is block with --reconstruct-loss mse, block-cn with "
                        "channel-normalized, block-rn with residual-normalized")
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--table", action="store_true", help="only rewrite README.md from runs.csv")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.table:
        write_table()
        return
    fl8s = {"no": [False], "yes": [True], "both": [False, True]}[args.first_last_8bit]
    done = done_cells()
    for model in args.models.split(","):
        for bits in args.bits:
            w, a = map(int, bits.split(","))
            for fl8 in fl8s:
                for calib in args.calib:
                    label = calib_label(model, calib, args.preset, args.reconstruct, a)
                    for seed in args.seeds:
                        name = cell_name(model, w, a, fl8, label, seed, args.reconstruct, args.iters)
                        if name in done:
                            continue
                        row = run_cell(model, w, a, fl8, calib, seed, args.reconstruct, args.iters, args.preset,
                                       label)
                        append_row(CSV, FIELDS, row)
                        write_table()
                        print(f"{name}: ORT {row['onnxruntime_top1']} sim {row['simulator_top1']} "
                              f"(FP32 {row['fp32_top1']}) {row['seconds_total']} s", flush=True)


if __name__ == "__main__":
    main()
