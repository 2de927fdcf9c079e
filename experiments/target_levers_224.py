"""Two image-side levers at 224×224, simulated: per-image contrast jitter and distance-decaying pixel correlation.

    python experiments/target_levers_224.py MODEL VARIANT[,VARIANT...]

VARIANT: real | noise | gzsq | jit:σ (gzsq images, each image's contrast about its mean scaled by exp(σ·N(0,1)),
pixels clamped) | pc:r (gzsq with TargetConfig.pixel_correlation = r). Seeds 0, 1, 2 (real: one draw of 64 even
rows of the sample). Evaluated on the 250 odd rows of ../shared/data/imagenet-sample: agreement with FP32 of the
simulated W8A8 model with ONNX Runtime's placement (`runtime`) and of W6A6 with the reference placement, min/max
ranges, BN folded. One image is 0.4 pt.
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gzsq.config import QuantConfig, SourceOptions
from gzsq.data import load_dataset
from gzsq.evaluation import predict
from gzsq.models import load_model
from gzsq.quantization.sim import quantize
from gzsq.sources.registry import make_calibration

torch.set_num_threads(1)  # one thread: byte-identical distillation
shared = str(Path(__file__).resolve().parents[2] / "shared")
name = sys.argv[1]
variants = sys.argv[2].split(',')
cases={'cifar10-resnet20-nf':(None, shared+'/data/cifar10/test.npz', shared+'/data/cifar10/train-jpeg.tar', 256),
 'cifar10-vgg7-nf':(None, shared+'/data/cifar10/test.npz', shared+'/data/cifar10/train-jpeg.tar', 256),
 'cifar10-resnet32':(shared+'/models/cifar10/resnet32.th', shared+'/data/cifar10/test.npz', shared+'/data/cifar10/train-jpeg.tar', 256),
 'efficientnet-lite0':(None, shared+'/data/imagenet-sample', None, 64),
 'mobilenet-v2':(shared+'/models/imagenet/mobilenet_v2-b0353104.pth', shared+'/data/imagenet-sample', None, 64)}
wts, evp, realp, n = cases[name]
model = load_model(name, wts)
ev = load_dataset(evp)
if realp is None:
    erows = np.arange(1, len(ev), 2); rrows = np.arange(0, len(ev), 2)
    realimgs = model.input_spec.to_tensor(ev.images(np.sort(np.random.default_rng(0).choice(rrows, n, replace=False))))
else:
    erows = np.arange(0, len(ev), 5)
    rd = load_dataset(realp); realimgs = model.input_spec.to_tensor(rd.images(np.sort(np.random.default_rng(0).choice(len(rd), n, replace=False))))
X = model.input_spec.to_tensor(ev.images(erows))
fp = predict(model, X)
lo, hi = model.input_spec.pixel_bounds()
bits = [(8,8,'runtime'), (6,6,'spec')] if realp is None else [(8,8,'spec'), (6,6,'spec'), (4,8,'spec')]
def agree(calib):
    out = []
    for w,a,pl in bits:
        sim = quantize(model, calib, QuantConfig(w_bits=w, a_bits=a, placement=pl))
        out.append(100*float((predict(sim, X) == fp).mean()))
    return out
def jitter(x, sigma, seed):
    g = torch.Generator().manual_seed(1000+seed)
    a = torch.exp(sigma*torch.randn(len(x), 1, 1, 1, generator=g))
    m = x.mean((1,2,3), keepdim=True)
    return (m + a*(x-m)).clamp(lo, hi)
for v in variants:
    for seed in ([0] if v == 'real' else [0,1,2]):
        t=time.time()
        if v == 'real': c = realimgs
        elif v == 'noise': c = make_calibration('gaussian', model, n, seed=seed).images
        else:
            base, _, arg = v.partition(':')
            ov = ((('pixel_correlation', float(arg)),) if base == 'pc' else ())
            c = make_calibration('gzsq', model, n, seed=seed, options=SourceOptions(preset='default', overrides=ov)).images
            if base == 'jit': c = jitter(c, float(arg), seed)
        r = agree(c)
        print(f"{name} {v:10s} seed {seed} " + ' '.join(f"W{w}A{a}{pl[0]} {x:.2f}" for (w,a,pl),x in zip(bits,r)) + f"  ({time.time()-t:.0f}s)", flush=True)
