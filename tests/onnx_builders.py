"""Small synthetic ONNX models shaped like insightface's buffalo_l pack.

No real face models can be downloaded here, so the insightface backend is tested
on stand-ins that have exactly the input/output contract insightface's loaders
route and decode (see insightface/model_zoo/model_zoo.py ``ModelRouter`` and
insightface/model_zoo/scrfd.py ``SCRFD.forward``):

* ArcFace: one input ``[N, 3, 112, 112]`` and one output ``[N, dim]``.
* SCRFD (the "10g with keypoints" layout): one input ``[1, 3, H, W]`` with dynamic
  H and W and 9 outputs in the order
  ``score_8, score_16, score_32, bbox_8, bbox_16, bbox_32, kps_8, kps_16, kps_32``,
  each of shape ``[(H/s) * (W/s) * 2, C]`` with C = 1, 4, 10. Rows run over
  (grid y, grid x, anchor); boxes and keypoints are distances in units of the
  stride from the anchor centre ``(x * s, y * s)``.

The detector is built to be predictable rather than random: on one stride
(``active_stride``) the score of a grid cell is a sigmoid of that cell's mean
value in one network input channel (``score_channel``; SCRFD feeds the network
RGB, since ``blobFromImage(..., swapRB=True)`` converts insightface's BGR input),
and every other stride scores ~0. Box and keypoint outputs are constants, so each
detection is a ``4 * s`` square around its anchor centre with keypoints at the
ArcFace template positions inside it. A test can therefore paint a red cell and
know where the face must come out, and a black image must give no faces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # accepted by every onnxruntime >= 1.14

SCRFD_STRIDES = (8, 16, 32)
SCRFD_ANCHORS = 2
# Half side of every detected box, in units of the stride (box side = 4 * stride).
BOX_HALF_STRIDES = 2.0
# ArcFace's 112x112 5-point template (insightface.utils.face_align.arcface_dst).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)  # fmt: skip
# Keypoint offsets from the anchor centre in stride units: the template placed so
# that the 112-px chip spans exactly the decoded box.
KPS_OFFSETS_STRIDES = (ARCFACE_TEMPLATE - 56.0) / 112.0 * (2 * BOX_HALF_STRIDES)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_arcface(path: Path, dim: int = 512, seed: int = 0) -> Path:
    """Random linear 'ArcFace': [N,3,112,112] -> [N,dim].

    A 16x16 stride-16 conv (-> 32 x 7 x 7) then a fully connected layer. The brief
    suggested a global pool, but pooling away all spatial layout makes random
    features nearly identical for every face; flattening the 7x7 grid keeps chips
    distinguishable. Node names avoid the 'Sub'/'Mul' prefixes that make
    ArcFaceONNX assume an MXNet export with built-in normalisation.
    """
    rng = np.random.default_rng(seed)
    channels, grid = 32, 112 // 16
    conv_w = rng.normal(0, 0.05, (channels, 3, 16, 16)).astype(np.float32)
    conv_b = rng.normal(0, 0.05, (channels,)).astype(np.float32)
    fc_w = rng.normal(0, 0.05, (channels * grid * grid, dim)).astype(np.float32)
    fc_b = rng.normal(0, 0.05, (dim,)).astype(np.float32)
    graph = helper.make_graph(
        nodes=[
            helper.make_node(
                "Conv",
                ["input.1", "conv_w", "conv_b"],
                ["feat"],
                name="conv0",
                kernel_shape=[16, 16],
                strides=[16, 16],
            ),
            helper.make_node("Flatten", ["feat"], ["flat"], name="flatten0", axis=1),
            helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc1"], name="fc1"),
        ],
        name="synthetic_arcface",
        inputs=[helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        outputs=[helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", dim])],
        initializer=[
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(conv_b, "conv_b"),
            numpy_helper.from_array(fc_w, "fc_w"),
            numpy_helper.from_array(fc_b, "fc_b"),
        ],
    )
    return _save(_model(graph), path)


def build_scrfd(
    path: Path,
    *,
    active_stride: int = 32,
    score_channel: int = 0,
    gain: float = 12.0,
    level: float = 0.5,
) -> Path:
    """Deterministic SCRFD stand-in (9 outputs, 3 strides, 2 anchors, keypoints).

    On ``active_stride`` a cell scores ``sigmoid(gain * (mean_c - level))`` where
    ``mean_c`` is the cell's mean of network channel ``score_channel`` (0 = R) after
    SCRFD's normalisation ``(pixel - 127.5) / 128``, so with the defaults a cell of
    pure red (R = 255) scores ~0.997 and a black or pure blue cell ~1e-8. Other
    strides always score ~2e-9. ``gain=0`` with ``level>0`` gives a detector that
    never fires.
    """
    if active_stride not in SCRFD_STRIDES:
        raise ValueError(f"active_stride must be one of {SCRFD_STRIDES}")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    outputs: dict[str, list[onnx.ValueInfoProto]] = {"score": [], "bbox": [], "kps": []}
    box = np.full(4, BOX_HALF_STRIDES, np.float32)  # left, top, right, bottom distances
    kps = KPS_OFFSETS_STRIDES.reshape(-1).astype(np.float32)
    for s in SCRFD_STRIDES:
        nodes.append(
            helper.make_node(
                "AveragePool",
                ["input.1"],
                [f"pool{s}"],
                name=f"pool{s}",
                kernel_shape=[s, s],
                strides=[s, s],
            )
        )
        score_w = np.zeros((SCRFD_ANCHORS, 3, 1, 1), np.float32)
        if s == active_stride:
            score_w[:, score_channel] = gain
            score_b = np.full(SCRFD_ANCHORS, -gain * level, np.float32)
        else:
            score_b = np.full(SCRFD_ANCHORS, -20.0, np.float32)
        per_anchor = {"score": (score_w, score_b)}
        # Box and keypoint heads ignore the image: zero weights, constant bias.
        for part, vec in (("bbox", box), ("kps", kps)):
            width = vec.size
            per_anchor[part] = (
                np.zeros((SCRFD_ANCHORS * width, 3, 1, 1), np.float32),
                np.tile(vec, SCRFD_ANCHORS),
            )
        for part, (w, b) in per_anchor.items():
            width = w.shape[0] // SCRFD_ANCHORS
            inits += [
                numpy_helper.from_array(w, f"{part}{s}_w"),
                numpy_helper.from_array(b, f"{part}{s}_b"),
            ]
            raw = f"{part}{s}_conv"
            nodes.append(
                helper.make_node(
                    "Conv",
                    [f"pool{s}", f"{part}{s}_w", f"{part}{s}_b"],
                    [raw],
                    name=raw,
                    kernel_shape=[1, 1],
                )
            )
            if part == "score":
                nodes.append(helper.make_node("Sigmoid", [raw], [f"{raw}_sig"], name=f"sig{s}"))
                raw = f"{raw}_sig"
            # [1, A*C, h, w] -> [1, h, w, A*C] -> [h*w*A, C]: rows in (y, x, anchor) order,
            # the order SCRFD.forward builds its anchor centres in.
            nodes.append(helper.make_node("Transpose", [raw], [f"{part}{s}_t"], perm=[0, 2, 3, 1]))
            shape_name = f"{part}{s}_shape"
            inits.append(numpy_helper.from_array(np.array([-1, width], np.int64), shape_name))
            out_name = f"{part}_{s}"
            nodes.append(helper.make_node("Reshape", [f"{part}{s}_t", shape_name], [out_name]))
            outputs[part].append(
                helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [f"n{s}", width])
            )
    graph = helper.make_graph(
        nodes=nodes,
        name="synthetic_scrfd",
        inputs=[
            helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])
        ],
        outputs=outputs["score"] + outputs["bbox"] + outputs["kps"],
        initializer=inits,
    )
    return _save(_model(graph), path)


def build_buffalo_pack(model_dir: Path, pack: str = "buffalo_l", **scrfd_kwargs) -> Path:
    """Write ``model_dir/insightface/<pack>/{det_10g,w600k_r50}.onnx``; return the pack dir."""
    pack_dir = Path(model_dir) / "insightface" / pack
    build_scrfd(pack_dir / "det_10g.onnx", **scrfd_kwargs)
    build_arcface(pack_dir / "w600k_r50.onnx")
    return pack_dir
