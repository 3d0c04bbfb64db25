"""Offline demo data: protected identities, authentic uploads and home-made face swaps."""

from core.demo.dataset import PROTECTED, ManifestRow, build_demo_set, load_manifest, load_references
from core.demo.faceswap import swap_face

__all__ = [
    "PROTECTED",
    "ManifestRow",
    "build_demo_set",
    "load_manifest",
    "load_references",
    "swap_face",
]
