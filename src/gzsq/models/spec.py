"""How a model wants its input: every zoo model carries an `InputSpec`.

A user hands gzsq images (uint8 HWC arrays); the spec turns them into the
normalized N×C×H×W tensor the network was trained on, so nobody has to know a
model's preprocessing by heart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import DataError


@dataclass(frozen=True)
class InputSpec:
    """Preprocessing of one model: optional resize/crop, then (x/255 - mean) / std."""

    size: int  # side of the square input the network sees
    mean: tuple[float, float, float]  # on 0..1 pixels
    std: tuple[float, float, float]
    resize_shorter: int | None = None  # resize so the shorter side is this (bicubic)
    center_crop: int | None = None  # then crop a centered square of this side
    channel_order: str = "rgb"  # "bgr" for Caffe-style models: channels are reversed before normalizing

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def _geometry(self, image: np.ndarray) -> np.ndarray:
        if self.resize_shorter is None and self.center_crop is None:
            return image
        pil = Image.fromarray(image)
        if self.resize_shorter is not None:
            w, h = pil.size
            scale = self.resize_shorter / min(w, h)
            new = (max(1, round(w * scale)), max(1, round(h * scale)))
            if new != (w, h):
                pil = pil.resize(new, Image.BICUBIC)
        if self.center_crop is not None:
            w, h = pil.size
            c = self.center_crop
            left, top = int(round((w - c) / 2.0)), int(round((h - c) / 2.0))
            pil = pil.crop((left, top, left + c, top + c))
        return np.asarray(pil)

    def to_tensor(self, images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
        """uint8 HWC images (a list or an N×H×W×C array) → normalized N×C×H×W float32."""
        arrays = [self._geometry(np.asarray(im)) for im in images]
        wanted = (self.size, self.size, 3)
        odd = next((a.shape for a in arrays if a.shape != wanted), None)
        if odd is not None:
            raise DataError(f"images are {'×'.join(map(str, odd))} (H×W×C) after preprocessing but the model takes "
                            f"{'×'.join(map(str, wanted))}: use a dataset made for this model")
        batch = np.stack(arrays).astype(np.float32) / 255.0  # N,H,W,C
        if self.channel_order == "bgr":
            batch = batch[..., ::-1]
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        batch = (batch - mean) / std
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))

    def pixel_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (low, high) of valid pixels in the normalized space, shaped 1×3×1×1."""
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (0 - mean) / std, (1 - mean) / std

    def input_range(self) -> tuple[float, float]:
        """One (low, high) covering every channel's valid pixels: the network input's quantization range,
        known without data (the simulator and the ONNX export both use it)."""
        low, high = self.pixel_bounds()
        return float(low.min()), float(high.max())

    def to_uint8(self, x: torch.Tensor) -> np.ndarray:
        """Normalized N×C×H×W → uint8 N×H×W×C (for previews)."""
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        pixels = (x.detach().cpu() * std + mean).clamp(0, 1) * 255
        if self.channel_order == "bgr":
            pixels = pixels.flip(1)
        return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
