"""Fill results/accuracy.csv: models × settings × calibration sources × bit-widths × seeds (protocol: docs/how-it-works.md §5).

    python experiments/run_accuracy.py                       # the whole grid, resumable
    python experiments/run_accuracy.py --models cifar10-resnet20 --calibs real --seeds 0
    python experiments/run_accuracy.py --shard 1/3          # machine 2 of 3: every 3rd cell group
    torchrun --nproc-per-node 2 experiments/run_accuracy.py  # the ranks share the grid the same way

Several machines or processes: `--shard I/N` (or torchrun, whose RANK/WORLD_SIZE give it) runs every
N-th (model, source, seed) group of the grid, starting at the I-th, and writes its rows to its own
part file, results/parts/accuracy-shard-I-of-N.csv (or OUT-shard-I-of-N.csv), so shards never write the same file;
`python experiments/make_tables.py` merges the parts.

Resumable: rows already in the CSV (same model, setting, calib, bits, observer,
n_calib, seed) are skipped, and the CSV is rewritten atomically after every
calibration set, so a killed run loses at most one set's rows. The FP32
predictions are computed once per model and every calibration set once per
(source, seed) and reused across bit-widths.

Sources other than zeroq read nothing that differs between the `bn` and `bn-free`
settings (noise and real images ignore the model; gzsq folds BN before reading the
weights), so their row is computed once and recorded under both settings. zeroq
runs in the `bn` setting only: it refuses the `bn-free` one by design.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

from assets import CIFAR_RESNETS, CIFAR_TEST, CIFAR_TRAIN, IMAGENET_SAMPLE

from gzsq.atomic import atomic_open
from gzsq.config import QuantConfig
from gzsq.config import CalibrationConfig, calib_label
from gzsq.evaluation import calibration_folds, evaluate_folds, load_eval_set, predict
from gzsq.fold import has_batchnorm
from gzsq.models import load_model

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = ["model", "setting", "calib", "w_bits", "a_bits", "observer", "n_calib", "seed",
           "fp32_top1", "top1", "agreement", "seconds"]
KEY = ["model", "setting", "calib", "w_bits", "a_bits", "observer", "n_calib", "seed"]


def model_table() -> dict[str, dict]:
    cifar = dict(data=CIFAR_TEST, calib_data=CIFAR_TRAIN, n=256)
    imagenet = dict(data=IMAGENET_SAMPLE, calib_data=None, n=64)  # real: 2 folds
    table = {name: dict(weights=weights, **cifar) for name, weights in CIFAR_RESNETS.items()}
    table["cifar10-resnet20-nf"] = dict(weights=None, **cifar)
    table["cifar10-resnet32-nf"] = dict(weights=None, **cifar)
    table["cifar10-vgg7-nf"] = dict(weights=None, **cifar)
    table["efficientnet-lite0"] = dict(weights=None, **imagenet)
    return table


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> None:
    """Atomic: a temp file in the same folder, then rename."""
    with atomic_open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def key_of(row: dict) -> tuple:
    return tuple(str(row[k]) for k in KEY)


def parse_bits(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        w, a = item.upper().removeprefix("W").split("A")
        out.append((int(w), int(a)))
    return out


def parse_shard(text: str | None) -> tuple[int, int]:
    """`I/N` → (I, N); without it, torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if text is None:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise SystemExit(f"--shard must be I/N with 0 <= I < N, got {text!r}")
    return int(i), int(n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cifar10-resnet20,cifar10-resnet32,cifar10-resnet44,efficientnet-lite0")
    p.add_argument("--calibs", default="real,gaussian,uniform",
                   help="comma list; gzsq-<preset> for a gzsq preset, e.g. gzsq-default,gzsq-paper,zeroq")
    p.add_argument("--bits", default="W8A8,W6A6,W4A8,W4A4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--observer", default="minmax")
    p.add_argument("--out", default=str(ROOT / "results/accuracy.csv"))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run every N-th (model, source, seed) group from the I-th (0-based); default under torchrun: "
                        "RANK/WORLD_SIZE; rows go to results/parts/accuracy-shard-I-of-N.csv (with --out: OUT-shard-I-of-N.csv)")
    args = p.parse_args(argv)
    shard, shards = parse_shard(args.shard)
    if shards > 1:  # each shard its own file: results/parts/accuracy-shard-I-of-N.csv, or OUT's name + the shard
        given = Path(args.out)
        args.out = str(ROOT / f"results/parts/accuracy-shard-{shard}-of-{shards}.csv" if args.out == p.get_default("out")
                       else given.with_name(f"{given.stem}-shard-{shard}-of-{shards}{given.suffix}"))
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows = read_rows(out)
    done = {key_of(r) for r in rows}
    table = model_table()
    bits = parse_bits(args.bits)
    seeds = [int(s) for s in args.seeds.split(",")]
    group = -1
    for name in args.models.split(","):
        spec = table[name]
        model = load_model(name, spec["weights"])
        settings = ["bn", "bn-free"] if has_batchnorm(model) else ["bn-free"]
        eval_set = fp32_pred = None
        for calib_name in args.calibs.split(","):
            calib, _, preset = calib_name.partition("-") if calib_name.startswith("gzsq") else (calib_name, "", "")
            preset = preset or "default"
            label = calib_label(calib, preset)
            run_settings = ["bn"] if calib == "zeroq" else settings
            if calib == "zeroq" and "bn" not in settings:
                print(f"skip {name} zeroq: no BatchNorm statistics", flush=True)
                continue
            for seed in seeds:
                group += 1
                if group % shards != shard:
                    continue
                todo = [(w, a) for w, a in bits
                        if any(key_of(dict(model=name, setting=s, calib=label, w_bits=w, a_bits=a,
                                            observer=args.observer, n_calib=spec["n"], seed=seed)) not in done
                               for s in run_settings)]
                if not todo:
                    continue
                if eval_set is None:
                    eval_set = load_eval_set(model, spec["data"])
                    fp32_pred = predict(model, eval_set.images)
                calibration = CalibrationConfig(source=calib, n_images=spec["n"], seed=seed, setting=run_settings[0],
                                                preset=preset,
                                                data=str(spec["calib_data"]) if spec["calib_data"] else None)
                folds = calibration_folds(model, eval_set, calibration)
                calib_seconds = sum(f.seconds for f in folds)
                for w, a in todo:
                    config = QuantConfig(w_bits=w, a_bits=a, observer=args.observer)
                    t = time.perf_counter()
                    metrics, _ = evaluate_folds(model, eval_set, folds, config, fp32_pred)
                    seconds = round(calib_seconds + time.perf_counter() - t, 2)
                    for s in run_settings:
                        row = dict(model=name, setting=s, calib=label, w_bits=w, a_bits=a, observer=args.observer,
                                   n_calib=spec["n"], seed=seed, **metrics, seconds=seconds)
                        rows = [r for r in rows if key_of(r) != key_of(row)] + [row]
                        done.add(key_of(row))
                    print(f"{name:22s} {label:13s} seed {seed} W{w}A{a}: top1 {metrics['top1']:6.2f} "
                          f"(fp32 {metrics['fp32_top1']:.2f}) agree {metrics['agreement']:6.2f}  {seconds:.1f}s",
                          flush=True)
                write_rows(out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
