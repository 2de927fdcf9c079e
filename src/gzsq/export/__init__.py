"""Real integer models out (docs/how-it-works.md §4): FP32 ONNX export, ONNX Runtime int8 (QDQ), and running them."""

from .onnx_fp32 import export_fp32_onnx
from ..config import Int8ExportConfig
from .onnx_int8 import activation_ranges, export_onnx_int8
from .runtime import OnnxClassifier

__all__ = ["export_fp32_onnx", "export_onnx_int8", "Int8ExportConfig", "activation_ranges", "OnnxClassifier"]
