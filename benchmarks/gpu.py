"""Images/s of the two heavy models on a GPU, per batch size and dtype.

    python -m benchmarks.gpu [--batch-sizes 1,8,32,128,256] [--dtypes fp32,fp16,bf16]
        [--models vit_l14,arcface_r50] [--seconds 2] [--device cuda]

- ``vit_l14``: CLIP ViT-L/14 vision tower (open_clip ``ViT-L-14`` with QuickGELU, as
  core.forensics.clip_features loads it), 224 x 224 input: the UnivFD backbone.
- ``arcface_r50``: an IResNet-50 (insightface's ArcFace R50 layout: 3-4-14-3
  improved residual blocks, 112 x 112 input, 512-d embedding).

Random weights: speed does not depend on them, and nothing is downloaded. Each
model is cast to the dtype (no autocast), run under ``torch.inference_mode`` for
about ``--seconds`` per configuration after a warm-up. Prints one JSON object; without
a CUDA device it prints ``{"skipped": "no CUDA device"}`` and exits 0 (``--device cpu``
runs the same code on the CPU, for checking the benchmark itself).
"""

from __future__ import annotations

import argparse
import json
import time

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def iresnet50(embedding_dim: int = 512):
    """IResNet-50 as in insightface's arcface_torch (layer sizes and block order)."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.BatchNorm2d(cin, eps=1e-5),
                nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout, eps=1e-5),
                nn.PReLU(cout),
                nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout, eps=1e-5),
            )
            self.down = (
                nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5)
                )
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x):
            return self.body(x) + self.down(x)

    layers, widths = (3, 4, 14, 3), (64, 128, 256, 512)
    mods: list = [
        nn.Conv2d(3, 64, 3, 1, 1, bias=False),
        nn.BatchNorm2d(64, eps=1e-5),
        nn.PReLU(64),
    ]
    cin = 64
    for depth, width in zip(layers, widths, strict=True):
        for i in range(depth):
            mods.append(Block(cin, width, 2 if i == 0 else 1))
            cin = width
    mods += [
        nn.BatchNorm2d(512, eps=1e-5),
        nn.Flatten(),
        nn.Linear(512 * 7 * 7, embedding_dim),
        nn.BatchNorm1d(embedding_dim, eps=1e-5),
    ]
    return nn.Sequential(*mods)


def vit_l14():
    import open_clip

    model = open_clip.create_model("ViT-L-14", pretrained=None, force_quick_gelu=True)
    return model.visual  # the text tower is not used by the detectors


MODELS = {"vit_l14": (vit_l14, 224), "arcface_r50": (iresnet50, 112)}


def bench(model, size: int, batch: int, dtype, device, seconds: float) -> dict:
    import torch

    x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        for _ in range(3):  # warm-up: cuDNN algorithm choice, allocator
            model(x)
        sync()
        iters, t0 = 0, time.perf_counter()
        while True:
            model(x)
            iters += 1
            sync()
            dt = time.perf_counter() - t0
            if dt >= seconds or iters >= 1000:
                break
    out = {
        "batch": batch,
        "images_per_s": round(batch * iters / dt, 1),
        "ms_per_batch": round(1000 * dt / iters, 3),
        "iters": iters,
    }
    if device.type == "cuda":
        out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-sizes", default="1,8,32,128,256")
    ap.add_argument("--dtypes", default="fp32,fp16,bf16")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seconds", type=float, default=2.0, help="timed run per configuration")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args(argv)

    try:
        import torch
    except ImportError:
        print(json.dumps({"skipped": "torch not installed"}))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
        torch.backends.cudnn.allow_tf32 = False
    batches = [int(b) for b in args.batch_sizes.split(",")]
    results = []
    for name in args.models.split(","):
        build, size = MODELS[name]
        base = build().eval()
        params_m = round(sum(p.numel() for p in base.parameters()) / 1e6, 1)
        for dname in args.dtypes.split(","):
            dtype = getattr(torch, DTYPES[dname])
            model = base.to(device=device, dtype=dtype)
            for b in batches:
                row = {"model": name, "params_m": params_m, "input": size, "dtype": dname}
                try:
                    row |= bench(model, size, b, dtype, device, args.seconds)
                except torch.OutOfMemoryError:
                    row |= {"batch": b, "error": "out of memory"}
                    torch.cuda.empty_cache()
                except RuntimeError as e:  # e.g. a dtype the device/kernel lacks
                    row |= {"batch": b, "error": str(e).splitlines()[0][:200]}
                results.append(row)
        del base, model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    out = {
        "benchmark": "gpu",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "weights": "random",
        "results": results,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
