"""Is MobileNetV2's W4A8 gap a budget gap? The main job with block reconstruction, at the CPU default budget
(64 images, 500 steps per unit) and at larger ones (more images, more steps per unit), on gzsq's images, Gaussian
noise and real images, on a GPU or on the CPU.

    # on a machine with a CUDA GPU, the sample and the checkpoint given explicitly:
    python experiments/gpu_budget_224.py --sample DIR --weights mobilenet_v2-b0353104.pth --device cuda \
        --out OUTDIR --deadline 520 --runs gzsq:64:500:0 real:250:4000:0 gzsq:256:4000:0 ...
    python experiments/gpu_budget_224.py --table OUTDIR/gpu_budget_224.jsonl --runs ...  # rewrite the table,
                                                      # naming the runs asked for that did not finish

Every run is `gzsq quantize mobilenet-v2 --weights W -o X.onnx --w-bits 4 --a-bits 8 --setting bn-free --calib SOURCE
--n-calib N --reconstruct-iters STEPS --seed S --device D --json`, the defaults otherwise (block reconstruction,
preset `auto`). All runs are evaluated by ONNX Runtime on the same 250 images, the odd rows of the sample's
labels.csv (fold B); `real` calibrates on the even rows (fold A, 250 images), never on what it is evaluated on.
A run spec is SOURCE:N:STEPS:SEED; SOURCE `gzsq+RECIPE` distills a recipe of experiments/recon_images.py on the
device first (64 images) and quantizes with it (--calib-set). Runs go in the order given, --jobs of them at a time (one GPU holds
several: a reconstruction step at 224×224 with 8 images leaves it mostly idle), each with its share of the
CPU threads; none starts after --deadline seconds, so a time-limited machine returns every finished row (one
JSON line each, written as it finishes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
from imagenet_int8 import make_folds  # noqa: E402

from gzsq.atomic import atomic_write_text  # noqa: E402

RESULTS = ROOT / "results" / "lowbit" / "gpu_budget_224.md"


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def run_one(spec: str, args, folds: dict[str, Path], work: Path) -> dict:
    source, n, steps, seed = spec.split(":")
    out = work / f"{source}-{n}-{steps}-{seed}.onnx"
    calib, distill_seconds = ["--calib", source, "--n-calib", n], None
    t = time.perf_counter()
    if source.startswith("gzsq+"):  # a recipe of experiments/recon_images.py, distilled here on the device first
        calib = ["--calib-set", str(work / f"{source}-{n}-{seed}.npz")]
        if n != "64":
            raise SystemExit(f"{spec}: recon_images recipes make 64 images at 224x224")
        proc = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'experiments'); "
                               "from recon_images import distill_set; from pathlib import Path; "
                               f"print(distill_set('mobilenet-v2', {source[5:]!r}, {int(seed)}, Path({calib[1]!r}), "
                               f"{args.device!r}, Path({str(args.weights)!r})))"],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            return {"spec": spec, "error": proc.stderr.strip()[-1500:], "seconds_total": 0.0}
        distill_seconds = float(proc.stdout.strip().splitlines()[-1].strip("()").split(",")[0])
    cmd = ["quantize", "mobilenet-v2", "--weights", str(args.weights), "-o", str(out), "--w-bits", "4",
           "--a-bits", "8", "--setting", "bn-free", *calib, "--reconstruct-iters", steps,
           "--seed", seed, "--device", args.device, "--eval-data", str(folds["B"]), "--json", "--force", "-q",
           "--threads", str(max(1, (os.cpu_count() or 1) // args.jobs))]
    if source == "real":
        cmd += ["--calib-data", str(folds["A"])]
    proc = subprocess.run([sys.executable, "-m", "gzsq", *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        return {"spec": spec, "error": proc.stderr.strip()[-1500:], "seconds_total": round(seconds, 1)}
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    ev = report["evaluation"]
    return {"spec": spec, "calib": source, "n_calib": int(n), "steps": int(steps), "seed": int(seed),
            "device": args.device, "images": ev["images"], "fp32_top1": ev["fp32_top1"],
            "onnxruntime_top1": ev["int8_top1"], "simulator_top1": ev["simulator_top1"], "agreement": ev["agreement"],
            "seconds": report.get("seconds", {}) | ({"distill": round(distill_seconds, 1)} if distill_seconds else {}),
            "seconds_total": round(seconds, 1), "jobs": args.jobs,
            "commit": _commit(),
            "command": "gzsq " + " ".join(cmd).replace(str(work), "$TMP")}


def write_table(jsonl: Path, asked: list[str]) -> None:
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    lines = ["# MobileNetV2 W4A8: reconstruction budget on a GPU", "",
             f"Generated by `python experiments/gpu_budget_224.py --table {jsonl.resolve().relative_to(ROOT)} --runs "
             f"{' '.join(asked)}` from the rows "
             "the script wrote on a GPU machine (device cuda) or on 2 CPU cores (device cpu; its docstring has the "
             "protocol; each row's command is in the JSON lines, and results/lowbit/gpu_budget_224.log holds each "
             "call). ONNX Runtime top-1 and agreement with FP32 on the written file, 250 images (the "
             "odd rows of the ImageNet sample; one image is 0.4 pt); `real` calibrates on the even rows. "
             "`gzsq` is the command's default (`local-long`: 16 images distilled, 48 flips/shifts of them); "
             "`gzsq+local_it100_all` distills all 64.", "",
             "Mean over the seeds run (ONNX Runtime top-1):", "",
             "| calibration | images | steps per unit | device | seeds | top-1 per seed | mean |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "error" not in r and not (r["device"] == "cuda" and r.get("jobs", 1) == 1 and r["seed"] == 0
                                     and r["steps"] == 500 and r["calib"] == "gzsq"):  # the code before 3ba84eb
            groups.setdefault((r["calib"], r["n_calib"], r["steps"], r["device"]), []).append(r)
    for (calib, n, steps, dev), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        top1 = [r["onnxruntime_top1"] for r in rs]
        per_seed = " / ".join(f"{v:.1f}" for v in top1)
        lines.append(f"| {calib} | {n} | {steps} | {dev} | {','.join(str(r['seed']) for r in rs)} | {per_seed} | "
                     f"{sum(top1) / len(top1):.1f} |")
    lines += ["", "Every run:", "",
             "| calibration | images | steps per unit | seed | FP32 top-1 | ONNX Runtime top-1 | agreement | "
             "simulator top-1 | device | runs at a time | reconstruct s | total s | commit |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['spec']} | failed: {r['error'].splitlines()[-1][:120]} | | | | | | | | | | | |")
            continue
        lines.append(f"| {r['calib']} | {r['n_calib']} | {r['steps']} | {r['seed']} | {r['fp32_top1']:.1f} | "
                     f"{r['onnxruntime_top1']:.1f} | {r['agreement']:.1f} | {r['simulator_top1']:.1f} | "
                     f"{r['device']} | {r.get('jobs', 1)} | {r['seconds'].get('reconstruct', 0):.0f} | "
                     f"{r['seconds_total']:.0f} | {r.get('commit', '')} |")
    missing = [spec for spec in asked if spec not in {r["spec"] for r in rows}]
    if missing:
        lines += ["", "Asked for but not finished within the machine's time (SOURCE:N:STEPS:SEED): "
                  + ", ".join(f"`{spec}`" for spec in missing) + "."]
    atomic_write_text(RESULTS, "\n".join(lines) + "\n")
    print(RESULTS.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sample", type=Path)
    p.add_argument("--weights", type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path)
    p.add_argument("--deadline", type=float, default=520.0, help="start no run after this many seconds")
    p.add_argument("--runs", nargs="+", default=[])
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument("--table", type=Path, help="only rewrite the table from this JSON-lines file")
    args = p.parse_args()
    if args.table:
        write_table(args.table, args.runs)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "gpu_budget_224.jsonl"
    start = time.perf_counter()
    lock, failed = threading.Lock(), threading.Event()

    def one(spec: str, folds: dict[str, Path], tmp: Path) -> None:
        if failed.is_set() or time.perf_counter() - start > args.deadline:
            print(f"not started: {spec}", flush=True)
            return
        row = run_one(spec, args, folds, tmp)
        with lock:
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k != "command"}), flush=True)
        if "error" in row:  # the same failure would repeat in every later run: spend no more time
            failed.set()

    with tempfile.TemporaryDirectory() as tmp:
        folds = make_folds(Path(tmp), args.sample)
        with ThreadPoolExecutor(args.jobs) as pool:
            for future in [pool.submit(one, spec, folds, Path(tmp)) for spec in args.runs]:
                future.result()


if __name__ == "__main__":
    main()
