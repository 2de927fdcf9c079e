"""Is Lite0's W4A8 reconstruction gap on gzsq images in the activation ranges?

gzsq's deep ranges are narrower than real images' (results/fidelity/); reconstruction starts from MSE-clipped
ranges on those images and learns the step sizes further on them. If that clipped real activations, keeping
min/max ranges and not learning them (`act_lr` 0) would recover much of the gap to real images (74.3 vs 47.0).

    python experiments/lowbit_act_ranges.py minmax 0 default    # observer, step-size lr, preset

Prints one JSON line: simulated top-1 and agreement with FP32 on all 500 images of the ImageNet sample
(seed 0, W4A8, MSE-clipped weights, block reconstruction with 500 steps per unit, one thread).
"""

import json
import sys
import time

import torch

import gzsq

from assets import IMAGENET_SAMPLE as SAMPLE

torch.set_num_threads(1)
observer, act_lr, preset = sys.argv[1], float(sys.argv[2]), sys.argv[3]
model = gzsq.load_model("efficientnet-lite0")
t = time.time()
row = gzsq.evaluate(model, SAMPLE,
                    calibration=gzsq.CalibrationConfig(source="gzsq", preset=preset, seed=0, setting="bn-free"),
                    quant=gzsq.QuantConfig(w_bits=4, a_bits=8, observer=observer, weight_clip="mse"),
                    reconstruction=gzsq.ReconstructConfig(act_lr=act_lr))
print(json.dumps({"observer": observer, "act_lr": act_lr, "preset": preset, "top1": row["top1"],
                  "agreement": row["agreement"], "wall": round(time.time() - t)}), flush=True)
