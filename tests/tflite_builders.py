"""A tiny TFLite model with MobileFaceNet.tflite's input/output contract, built here.

The real file (5 MB, from an npm package) is not in the repository, so the backend's
loading path (hash check -> tflite2onnx conversion -> onnxruntime -> pairs of chips) is
tested on a stand-in written with the ``tflite`` flatbuffer bindings (a dependency of
tflite2onnx): input ``[2, 112, 112, 3]`` float32 (batch fixed at 2, like the real file),
output ``[2, 192]``. Graph: a 16x16 stride-16 convolution (-> 7x7x8), a reshape to
392 values, a fully connected layer to 192. Random weights keep different chips apart
(no global pooling, which would make every face alike).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import flatbuffers
import numpy as np


def _mod(name: str):
    # ``tflite/__init__`` re-exports each class under its module's name; the builder
    # functions (Start, Add..., End) live in the modules themselves.
    return importlib.import_module(f"tflite.{name}")


Buffer, Conv2DOptions, FullyConnectedOptions = (
    _mod(n) for n in ("Buffer", "Conv2DOptions", "FullyConnectedOptions")
)
Model, Operator, OperatorCode, ReshapeOptions, SubGraph, Tensor = (
    _mod(n) for n in ("Model", "Operator", "OperatorCode", "ReshapeOptions", "SubGraph", "Tensor")
)
_OPTS = _mod("BuiltinOptions").BuiltinOptions

FLOAT32, INT32 = 0, 2
CONV_2D, FULLY_CONNECTED, RESHAPE = 3, 9, 22


def _ivec(b: flatbuffers.Builder, start, values: list[int]) -> int:
    start(b, len(values))
    for v in reversed(values):
        b.PrependInt32(int(v))
    return b.EndVector()


def _ovec(b: flatbuffers.Builder, start, offsets: list[int]) -> int:
    start(b, len(offsets))
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def build_tiny_mobilefacenet(path: Path, seed: int = 0, batch: int = 2, dim: int = 192) -> Path:
    rng = np.random.default_rng(seed)
    ch, grid = 8, 7
    conv_w = rng.normal(0, 0.05, (ch, 16, 16, 3)).astype(np.float32)  # OHWI
    conv_b = rng.normal(0, 0.05, (ch,)).astype(np.float32)
    fc_w = rng.normal(0, 0.05, (dim, grid * grid * ch)).astype(np.float32)  # [out, in]
    fc_b = rng.normal(0, 0.05, (dim,)).astype(np.float32)
    new_shape = np.array([batch, grid * grid * ch], np.int32)

    b = flatbuffers.Builder(1 << 20)
    # buffers: 0 empty (TFLite convention), then one per constant tensor
    datas = [None, conv_w, conv_b, fc_w, fc_b, new_shape]
    buf_offsets = []
    for d in datas:
        if d is None:
            Buffer.Start(b)
            buf_offsets.append(Buffer.End(b))
            continue
        raw = d.tobytes()
        b.StartVector(1, len(raw), 16)
        for byte in reversed(raw):
            b.PrependByte(byte)
        vec = b.EndVector()
        Buffer.Start(b)
        Buffer.AddData(b, vec)
        buf_offsets.append(Buffer.End(b))

    # tensors: (name, shape, type, buffer)
    specs = [
        ("input", [batch, 112, 112, 3], FLOAT32, 0),
        ("conv_w", list(conv_w.shape), FLOAT32, 1),
        ("conv_b", list(conv_b.shape), FLOAT32, 2),
        ("conv_out", [batch, grid, grid, ch], FLOAT32, 0),
        ("fc_w", list(fc_w.shape), FLOAT32, 3),
        ("fc_b", list(fc_b.shape), FLOAT32, 4),
        ("shape", [2], INT32, 5),
        ("flat", [batch, grid * grid * ch], FLOAT32, 0),
        ("embeddings", [batch, dim], FLOAT32, 0),
    ]
    tensor_offsets = []
    for name, shape, typ, buf in specs:
        n = b.CreateString(name)
        sh = _ivec(b, Tensor.StartShapeVector, shape)
        Tensor.Start(b)
        Tensor.AddShape(b, sh)
        Tensor.AddType(b, typ)
        Tensor.AddBuffer(b, buf)
        Tensor.AddName(b, n)
        tensor_offsets.append(Tensor.End(b))
    idx = {s[0]: i for i, s in enumerate(specs)}

    Conv2DOptions.Start(b)
    Conv2DOptions.AddPadding(b, 1)  # VALID
    Conv2DOptions.AddStrideW(b, 16)
    Conv2DOptions.AddStrideH(b, 16)
    Conv2DOptions.AddDilationWFactor(b, 1)
    Conv2DOptions.AddDilationHFactor(b, 1)
    conv_opts = Conv2DOptions.End(b)
    rs = _ivec(b, ReshapeOptions.StartNewShapeVector, list(new_shape))
    ReshapeOptions.Start(b)
    ReshapeOptions.AddNewShape(b, rs)
    reshape_opts = ReshapeOptions.End(b)
    FullyConnectedOptions.Start(b)
    fc_opts = FullyConnectedOptions.End(b)

    ops = [
        (0, ["input", "conv_w", "conv_b"], ["conv_out"], _OPTS.Conv2DOptions, conv_opts),
        (1, ["conv_out", "shape"], ["flat"], _OPTS.ReshapeOptions, reshape_opts),
        (2, ["flat", "fc_w", "fc_b"], ["embeddings"], _OPTS.FullyConnectedOptions, fc_opts),
    ]  # fmt: skip
    op_offsets = []
    for code, ins, outs, opt_type, opt in ops:
        iv = _ivec(b, Operator.StartInputsVector, [idx[t] for t in ins])
        ov = _ivec(b, Operator.StartOutputsVector, [idx[t] for t in outs])
        Operator.Start(b)
        Operator.AddOpcodeIndex(b, code)
        Operator.AddInputs(b, iv)
        Operator.AddOutputs(b, ov)
        Operator.AddBuiltinOptionsType(b, opt_type)
        Operator.AddBuiltinOptions(b, opt)
        op_offsets.append(Operator.End(b))

    tv = _ovec(b, SubGraph.StartTensorsVector, tensor_offsets)
    si = _ivec(b, SubGraph.StartInputsVector, [idx["input"]])
    so = _ivec(b, SubGraph.StartOutputsVector, [idx["embeddings"]])
    opv = _ovec(b, SubGraph.StartOperatorsVector, op_offsets)
    sg_name = b.CreateString("main")
    SubGraph.Start(b)
    SubGraph.AddTensors(b, tv)
    SubGraph.AddInputs(b, si)
    SubGraph.AddOutputs(b, so)
    SubGraph.AddOperators(b, opv)
    SubGraph.AddName(b, sg_name)
    sg = SubGraph.End(b)

    code_offsets = []
    for code in (CONV_2D, RESHAPE, FULLY_CONNECTED):
        OperatorCode.Start(b)
        OperatorCode.AddDeprecatedBuiltinCode(b, code)
        OperatorCode.AddBuiltinCode(b, code)
        OperatorCode.AddVersion(b, 1)
        code_offsets.append(OperatorCode.End(b))

    codes = _ovec(b, Model.StartOperatorCodesVector, code_offsets)
    sgs = _ovec(b, Model.StartSubgraphsVector, [sg])
    bufs = _ovec(b, Model.StartBuffersVector, buf_offsets)
    desc = b.CreateString("idwatch test stand-in for MobileFaceNet.tflite")
    Model.Start(b)
    Model.AddVersion(b, 3)
    Model.AddOperatorCodes(b, codes)
    Model.AddSubgraphs(b, sgs)
    Model.AddBuffers(b, bufs)
    Model.AddDescription(b, desc)
    model = Model.End(b)
    b.Finish(model, file_identifier=b"TFL3")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(b.Output()))
    return path


def reference_forward(x_nhwc: np.ndarray, seed: int = 0, dim: int = 192) -> np.ndarray:
    """The same network in numpy (to check the conversion): x is [N,112,112,3]."""
    rng = np.random.default_rng(seed)
    ch, grid = 8, 7
    conv_w = rng.normal(0, 0.05, (ch, 16, 16, 3)).astype(np.float32)
    conv_b = rng.normal(0, 0.05, (ch,)).astype(np.float32)
    fc_w = rng.normal(0, 0.05, (dim, grid * grid * ch)).astype(np.float32)
    fc_b = rng.normal(0, 0.05, (dim,)).astype(np.float32)
    n = len(x_nhwc)
    patches = x_nhwc.reshape(n, grid, 16, grid, 16, 3).transpose(0, 1, 3, 2, 4, 5)
    conv = np.einsum("nijhwc,ohwc->nijo", patches, conv_w) + conv_b  # [N,7,7,8] NHWC
    return conv.reshape(n, -1) @ fc_w.T + fc_b
