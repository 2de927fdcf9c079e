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
    """Preprocessing of one model: optional resize/crop, then (x/255 - mean) / std.

    Resize and crop apply only to images of another size than the model's input: an image that
    already has it is the model's own input (CIFAR at 32×32, a pre-cropped set) and is used as it
    is; resizing it to size/0.875 and cropping back would cut its border and cost accuracy.
    """

    size: int  # side of the square input the network sees
    mean: tuple[float, float, float]  # on 0..1 pixels
    std: tuple[float, float, float]
    resize_shorter: int | None = None  # resize so the shorter side is this (bicubic)
    center_crop: int | None = None  # then crop a centered square of this side
    channel_order: str = "rgb"  # "bgr" for Caffe-style models: channels are reversed before normalizing

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def has_input_size(self, image: np.ndarray) -> bool:
        return tuple(np.shape(image)[:2]) == (self.size, self.size)

    def describe(self, n_as_is: int, n: int) -> str:
        """What `to_tensor` did to n images of which n_as_is already had the input size (for reports)."""
        size = f"{self.size}×{self.size}"
        geometry = " then ".join(step for step in (
            f"shorter side resized to {self.resize_shorter} (bicubic)" if self.resize_shorter else "",
            f"centre {self.center_crop}×{self.center_crop} crop" if self.center_crop else "") if step)
        if not geometry or n_as_is == n:
            return f"all {n} images used at their size ({size}), only normalized"
        if n_as_is == 0:
            return f"all {n} images: {geometry}, normalized"
        return f"{n_as_is} of {n} images used at their size ({size}); the others: {geometry}; all normalized"

    def _geometry(self, image: np.ndarray) -> np.ndarray:
        if (self.resize_shorter is None and self.center_crop is None) or self.has_input_size(image):
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
