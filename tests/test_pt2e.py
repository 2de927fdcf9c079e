"""PT2E int8 (torchao X86InductorQuantizer) calibrated on gzsq's images: saved, reloaded, close to FP32."""

import torch

from gzsq.export.pt2e import load_pt2e, quantize_pt2e, save_pt2e

from .conftest import make_tiny


def test_pt2e_roundtrip_tracks_fp32(tmp_path):
    net = make_tiny()
    calib = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    converted = quantize_pt2e(net, calib)
    names = {str(n.target) for n in converted.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in t for t in names), "activations are quantized"
    path = save_pt2e(converted, calib, tmp_path / "tiny.pt2")
    loaded = load_pt2e(path)
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fp32, q = net(x), loaded(x)
    assert q.shape == fp32.shape
    assert (q - fp32).abs().max() < 0.1 * fp32.abs().max()  # 8-bit error, not a different function
    assert torch.equal(loaded(x), converted(x))
