"""Offline forensic features: named floats computed from a ForensicInput.

Nothing here loads model weights. Feature names carry their group as a prefix so
experiments and heads can select groups:

- ``face.*``  statistics of the loose face crop, and inner face vs its surroundings
  (a swapped face is pasted into a frame whose noise and sharpness it rarely matches);
- ``image.*`` the whole upload at native resolution: spectrum, noise, channel
  correlation, resampling traces, face region vs background;
- ``jpeg.*``  compression history (8x8 blocking, quantised DCT). Kept apart because it
  is the group most exposed to the container-format confound of faces-dev;
- ``ref.*``   the upload face compared with the claimed person's authentic references
  (identity similarity, the face statistics above as differences, landmark geometry).
  ``ref.available`` is 0 when there are no references; the other ``ref.*`` values are
  then 0 and the head treats them as missing (see core.forensics.head);
- ``id.*``    the upload face's identity vectors of its inner face, surroundings and
  whole face compared with each other (no references needed): a swap puts one person's
  inner face into another person's head;
- ``meta.*``  provenance text (EXIF, PNG text, XMP, C2PA). A separate signal.

Every value is finite. Sizes in pixels are deliberately not features: on faces-dev
they separate real from fake for reasons that have nothing to do with forgery.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import scipy.fft
from PIL import Image

from core.faces.base import DetectedFace
from core.faces.crops import FORENSIC_CROP_SIZE, square_box
from core.forensics.base import ForensicInput, ReferenceView

GROUPS = ("face", "image", "jpeg", "ref", "id", "meta")

# Largest native-resolution window analysed for the image group (pixels per side).
_IMAGE_WINDOW = 768
_EPS = 1e-6


def group_of(name: str) -> str:
    return name.split(".", 1)[0]


def reencode_jpeg(rgb: np.ndarray, quality: int = 90) -> np.ndarray:
    """Decode-independent copy of ``rgb`` after one in-memory JPEG round trip.

    Used for the "format-blind" condition: every image gets the same compression
    history, so features cannot tell PNG from JPEG uploads by their traces.
    """
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


# --------------------------------------------------------------------------- helpers


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _log(x: float) -> float:
    return float(math.log(max(x, _EPS)))


_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _noise_map(gray: np.ndarray) -> np.ndarray:
    # Immerkaer's operator: cancels locally linear image structure and keeps noise;
    # the mean of its absolute value over a region is a noise level estimate.
    return np.abs(cv2.filter2D(gray, cv2.CV_32F, _IMMERKAER)) * (math.sqrt(math.pi / 2) / 6)


def _noise_level(noise: np.ndarray, mask: np.ndarray | None = None) -> float:
    vals = noise[mask] if mask is not None else noise
    return float(vals.mean()) if vals.size else 0.0


def _residuals(rgb: np.ndarray) -> list[np.ndarray]:
    """High-pass residual of each channel (the input of ``_chan_corr``): computed once
    per image when several masks are compared (each blur is a full-image pass)."""
    f = rgb.astype(np.float32)
    return [f[..., c] - cv2.GaussianBlur(f[..., c], (0, 0), 1.0) for c in range(3)]


def _chan_corr(
    rgb: np.ndarray, mask: np.ndarray | None = None, res: list[np.ndarray] | None = None
) -> float:
    """Mean correlation of the high-pass residuals of R,B with G.

    Demosaicing makes camera residuals strongly correlated across channels; a
    generator's output need not be. ``res``: ``_residuals(rgb)`` when already computed.
    """
    res = _residuals(rgb) if res is None else res
    res = [r[mask] for r in res] if mask is not None else [r.ravel() for r in res]
    out = []
    for c in (0, 2):
        a, b = res[c], res[1]
        sa, sb = a.std(), b.std()
        out.append(
            float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb)) if sa * sb > _EPS else 1.0
        )
    return float(np.mean(out))


@lru_cache(maxsize=16)
def _spectrum_grid(h: int, w: int, bins: int) -> tuple[np.ndarray, ...]:
    """Window, radius map, bin index and bin counts of an h x w spectrum: the same for
    every window of that size (most uploads analyse the same few sizes), so built once.
    Read-only, as they are shared."""
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    yy, xx = np.indices((h, w))
    r = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)  # cycles per pixel, 0..~0.7
    idx = np.minimum((r / 0.5 * bins).astype(int), bins).ravel()
    counts = np.bincount(idx, minlength=bins + 1)[:bins]
    band = (r > 0.25) & (r < 0.5)  # the high band searched for isolated peaks
    out = (win, r, idx, counts, band)
    for a in out:
        a.setflags(write=False)
    return out


def _radial_spectrum(gray: np.ndarray, bins: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windowed power spectrum, its radial average and the normalised radius map."""
    h, w = gray.shape
    win, r, idx, counts, _ = _spectrum_grid(h, w, bins)
    # SciPy's FFT: the same single-precision transform as numpy's (float32 in,
    # complex64 out; results equal to float32 rounding) in a fifth of the time.
    spec = np.abs(np.fft.fftshift(scipy.fft.fft2((gray - gray.mean()) * win))) ** 2
    sums = np.bincount(idx, spec.ravel(), minlength=bins + 1)[:bins]
    radial = sums / np.maximum(counts, 1)
    return spec, radial, r


def _spectral_features(gray: np.ndarray, prefix: str) -> dict[str, float]:
    spec, radial, _ = _radial_spectrum(gray)
    bins = radial.size
    freqs = (np.arange(bins) + 0.5) / bins * 0.5
    logp = np.log(radial + _EPS)
    mid = (freqs > 0.05) & (freqs < 0.25)
    slope = float(np.polyfit(np.log(freqs[mid]), logp[mid], 1)[0])
    high = freqs > 0.25
    total = radial[1:].sum() + _EPS
    hf = float(radial[high].sum() / total)
    # Deviation of the high band from the power law fitted on the mid band: generators
    # and upsamplers leave either a deficit (smooth) or a bump (checkerboard) there.
    fit = np.polyval(np.polyfit(np.log(freqs[mid]), logp[mid], 1), np.log(freqs[high]))
    hf_dev = float(np.mean(logp[high] - fit))
    # Isolated peaks in the 2D high band (periodic up-sampling artefacts).
    band = spec[_spectrum_grid(*gray.shape, bins)[4]]
    peak = (
        _log(float(np.percentile(band, 99.9)) / (float(np.median(band)) + _EPS))
        if band.size
        else 0.0
    )
    return {
        f"{prefix}.spec_slope": slope,
        f"{prefix}.spec_hf": _log(hf),
        f"{prefix}.spec_hf_dev": hf_dev,
        f"{prefix}.spec_peak": peak,
    }


def _resampling_peak(gray: np.ndarray) -> float:
    """Periodicity of the second-derivative residual (Popescu-Farid style, simplified).

    Interpolation makes the residual variance periodic; its spectrum then has peaks.
    """
    d2 = np.abs(
        cv2.filter2D(gray, cv2.CV_32F, np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32))
    )
    feats = []
    for p in (d2.mean(axis=0), d2.mean(axis=1)):
        p = p - p.mean()
        if p.size < 16:
            continue
        s = np.abs(np.fft.rfft(p * np.hanning(p.size)))[2:]
        if s.size:
            feats.append(float(s.max() / (np.median(s) + _EPS)))
    return _log(float(np.mean(feats))) if feats else 0.0


# --------------------------------------------------------------------------- masks


def _landmarks68(face: DetectedFace) -> np.ndarray | None:
    pts = face.extra.get("landmarks68") if face.extra else None
    if pts is None:
        return None
    arr = np.asarray(pts, dtype=np.float32)
    return arr if arr.shape == (68, 2) else None


def _crop_transform(face: DetectedFace, size: int) -> tuple[float, float, float]:
    x1, y1, x2, y2 = square_box(face)
    return float(x1), float(y1), size / max(x2 - x1, 1)


def face_masks(
    face: DetectedFace, size: int = FORENSIC_CROP_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inner-face, boundary-band and outer-ring masks in loose-crop coordinates.

    The inner face is the hull of the 68 landmarks (jaw + brows) where available,
    else an ellipse inside the detection box; the outer ring is what lies outside a
    dilated hull, i.e. hair, ears, neck and background around the face.
    """
    ox, oy, s = _crop_transform(face, size)
    hull = np.zeros((size, size), np.uint8)
    pts = _landmarks68(face)
    if pts is not None:
        p = ((pts - [ox, oy]) * s).astype(np.int32)
        cv2.fillConvexPoly(hull, cv2.convexHull(p), 1)
    else:
        x1, y1, x2, y2 = face.box
        c = (int((((x1 + x2) / 2) - ox) * s), int((((y1 + y2) / 2) - oy) * s))
        ax = (max(int((x2 - x1) * s * 0.45), 2), max(int((y2 - y1) * s * 0.55), 2))
        cv2.ellipse(hull, c, ax, 0, 0, 360, 1, -1)
    k = max(3, size // 32) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    inner = cv2.erode(hull, kernel, iterations=2).astype(bool)
    dil = cv2.dilate(hull, kernel, iterations=2).astype(bool)
    band = dil & ~inner
    outer = ~cv2.dilate(hull, kernel, iterations=3).astype(bool)
    if inner.sum() < 64:  # degenerate landmarks: fall back to the crop centre
        inner = np.zeros_like(inner)
        inner[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
        outer = ~cv2.dilate(inner.astype(np.uint8), kernel, iterations=3).astype(bool)
        band = cv2.dilate(inner.astype(np.uint8), kernel, iterations=2).astype(bool) & ~inner
    return inner, band, outer


# --------------------------------------------------------------------------- groups


def face_features(crop: np.ndarray, face: DetectedFace) -> dict[str, float]:
    """``face.*``: the loose crop alone and its inner face vs surroundings."""
    size = crop.shape[0]
    gray = _gray(crop)
    inner, band, outer = face_masks(face, size)
    noise = _noise_map(gray)
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    grad = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    has_outer = outer.sum() >= 256

    n_in = _noise_level(noise, inner)
    n_out = _noise_level(noise, outer) if has_outer else n_in
    s_in = float(lap[inner].var())
    s_out = float(lap[outer].var()) if has_outer else s_in
    g_band = float(np.median(grad[band])) if band.any() else 0.0
    g_in = float(np.median(grad[inner]))

    # Blockwise noise in the inner face: blending and generation make it uneven, and
    # camera noise grows with brightness while synthesised texture need not.
    bs = max(size // 16, 4)
    hb, wb = size // bs, size // bs
    nb = noise[: hb * bs, : wb * bs].reshape(hb, bs, wb, bs).mean(axis=(1, 3))
    lb = gray[: hb * bs, : wb * bs].reshape(hb, bs, wb, bs).mean(axis=(1, 3))
    ib = inner[: hb * bs, : wb * bs].reshape(hb, bs, wb, bs).mean(axis=(1, 3)) > 0.9
    if ib.sum() >= 6:
        lnb = np.log(nb[ib] + 0.05)
        noise_cv = float(lnb.std())
        noise_lum = (
            float(np.corrcoef(lnb, lb[ib])[0, 1])
            if lb[ib].std() > 1e-3 and lnb.std() > 1e-6
            else 0.0
        )
    else:
        noise_cv, noise_lum = 0.0, 0.0

    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV).astype(np.float32)
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    res = _residuals(crop)
    cc_in = _chan_corr(crop, inner, res)
    feats = {
        "face.noise": _log(n_in),
        "face.sharp": _log(s_in),
        "face.noise_io": _log(n_in) - _log(n_out),
        "face.sharp_io": _log(s_in) - _log(s_out),
        "face.edge_band": _log(g_band + 1.0) - _log(g_in + 1.0),
        "face.chan_corr": cc_in,
        "face.chan_corr_io": cc_in - (_chan_corr(crop, outer, res) if has_outer else cc_in),
        "face.sat_mean": float(hsv[..., 1][inner].mean() / 255.0),
        "face.sat_std": float(hsv[..., 1][inner].std() / 255.0),
        "face.lab_a": float(lab[..., 1][inner].mean() - 128.0) / 32.0,
        "face.lab_b": float(lab[..., 2][inner].mean() - 128.0) / 32.0,
        "face.lum_std": float(lab[..., 0][inner].std() / 64.0),
        "face.noise_cv": noise_cv,
        "face.noise_lum": noise_lum,
    }
    feats.update(_spectral_features(gray, "face"))
    return feats


def _native_window(rgb: np.ndarray, face: DetectedFace, side: int) -> np.ndarray:
    """Square window of at most ``side`` pixels centred on the face, native resolution."""
    h, w = rgb.shape[:2]
    cx = (face.box[0] + face.box[2]) / 2
    cy = (face.box[1] + face.box[3]) / 2
    sw, sh = min(side, w), min(side, h)
    x0 = int(np.clip(cx - sw / 2, 0, w - sw))
    y0 = int(np.clip(cy - sh / 2, 0, h - sh))
    return rgb[y0 : y0 + sh, x0 : x0 + sw]


def image_features(rgb: np.ndarray, face: DetectedFace) -> dict[str, float]:
    """``image.*``: native-resolution statistics of the whole upload."""
    h, w = rgb.shape[:2]
    win = _native_window(rgb, face, _IMAGE_WINDOW)
    gray_win = _gray(win)
    feats = _spectral_features(gray_win, "image")
    gray = _gray(rgb)
    noise = _noise_map(gray)

    # The face box at native resolution vs everything outside the loose crop square.
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    x1, y1 = max(x1, 0), max(y1, 0)
    x2, y2 = min(max(x2, x1 + 1), w), min(max(y2, y1 + 1), h)
    face_mask = np.zeros((h, w), bool)
    face_mask[y1:y2, x1:x2] = True
    bx1, by1, bx2, by2 = square_box(face)
    bg = np.ones((h, w), bool)
    bg[max(by1, 0) : max(by2, 0), max(bx1, 0) : max(bx2, 0)] = False
    n_face = _noise_level(noise, face_mask)
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    s_face = float(lap[face_mask].var())
    res = _residuals(rgb)
    cc_face = _chan_corr(rgb, face_mask, res)
    if bg.sum() >= 1024:
        n_bg = _noise_level(noise, bg)
        s_bg = float(lap[bg].var())
        cc_bg = _chan_corr(rgb, bg, res)
    else:  # the face fills the picture: no background to compare with
        n_bg, s_bg, cc_bg = n_face, s_face, cc_face
    feats.update(
        {
            "image.noise": _log(_noise_level(_noise_map(gray_win))),
            "image.chan_corr": _chan_corr(win),
            "image.face_bg_noise": _log(n_face) - _log(n_bg),
            "image.face_bg_sharp": _log(s_face) - _log(s_bg),
            "image.face_bg_chan_corr": cc_face - cc_bg,
            "image.resample_face": _resampling_peak(gray[y1:y2, x1:x2]),
            "image.resample": _resampling_peak(gray_win),
        }
    )
    return feats


def jpeg_features(rgb: np.ndarray) -> dict[str, float]:
    """``jpeg.*``: traces of (earlier) JPEG compression in the decoded pixels."""
    gray = _gray(rgb)
    h, w = gray.shape
    h8, w8 = (h // 8) * 8, (w // 8) * 8
    feats = {"jpeg.block": 0.0, "jpeg.dct_zero": 0.0, "jpeg.dct_comb": 0.0}
    if h8 < 16 or w8 < 16:
        return feats
    g = gray[:h8, :w8]
    # Blocking: pixel steps across 8x8 block borders vs steps inside blocks.
    dx = np.abs(np.diff(g, axis=1))
    dy = np.abs(np.diff(g, axis=0))
    on_x = dx[:, 7::8].mean() if dx[:, 7::8].size else 0.0
    off_x = np.delete(dx, np.s_[7::8], axis=1).mean()
    on_y = dy[7::8, :].mean() if dy[7::8, :].size else 0.0
    off_y = np.delete(dy, np.s_[7::8], axis=0).mean()
    feats["jpeg.block"] = _log((on_x + on_y + 0.1) / (off_x + off_y + 0.1))
    # 8x8 DCT of the grid-aligned luminance; quantisation leaves many exact zeros
    # and a comb-shaped histogram in the low AC coefficients.
    blocks = (g - 128.0).reshape(h8 // 8, 8, w8 // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
    if blocks.shape[0] > 4000:
        blocks = blocks[:: blocks.shape[0] // 4000 + 1]
    coefs = np.stack([cv2.dct(b) for b in blocks])
    ac = coefs[:, [0, 1, 1, 2, 0], [1, 0, 1, 0, 2]]
    feats["jpeg.dct_zero"] = float(np.mean(np.abs(coefs[:, 2:, 2:]) < 0.5))
    # Comb: mass near the quantisation step's multiples, with the step estimated as the
    # most frequent small |coefficient| spacing; ~uniform (0.5) without quantisation.
    combs = []
    for k in range(ac.shape[1]):
        v = np.abs(ac[:, k])
        v = v[v > 1.0]
        if v.size < 50:
            continue
        best = 0.0
        for q in range(2, 17):
            frac = np.abs(v / q - np.round(v / q))
            best = max(best, float(np.mean(frac < 0.15)) - 0.3)
        combs.append(best)
    feats["jpeg.dct_comb"] = float(np.mean(combs)) if combs else 0.0
    return feats


_META_CAMERA = ("make", "model", "lensmodel", "fnumber", "exposuretime", "isospeedratings")
_META_EDIT = ("photoshop", "gimp", "lightroom", "snapseed", "picsart", "facetune")
_META_AI = (
    "stable diffusion",
    "stablediffusion",
    "midjourney",
    "dall-e",
    "dall·e",
    "dalle",
    "comfyui",
    "automatic1111",
    "novelai",
    "firefly",
    "imagen",
    "flux",
    "sdxl",
    "negative prompt",
    "steps:",
    "trainedalgorithmicmedia",
    "compositewithtrainedalgorithmicmedia",
    "generative",
    "deepfake",
    "faceswap",
    "simswap",
    "deepfacelab",
    "insightface",
    "roop",
)


def meta_features(metadata: dict[str, str]) -> dict[str, float]:
    """``meta.*``: provenance text. Absence proves nothing (uploads are often stripped)."""
    keys = {k.lower(): str(v).lower() for k, v in (metadata or {}).items()}
    text = " ".join(f"{k} {v}" for k, v in keys.items())
    return {
        "meta.n_fields": math.log1p(len(keys)),
        "meta.camera": float(any(k.split(":")[-1] in _META_CAMERA for k in keys)),
        "meta.edit_software": float(any(s in text for s in _META_EDIT)),
        "meta.ai_marker": float(any(s in text for s in _META_AI)),
        "meta.c2pa": float("c2pa" in text or "jumbf" in text),
    }


def read_metadata(data: bytes) -> dict[str, str]:
    """Provenance text of an encoded image: EXIF tags by name, PNG text, XMP, C2PA marker."""
    from PIL import ExifTags

    out: dict[str, str] = {}
    try:
        im = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - unreadable metadata is simply absent
        return out
    try:
        exif = im.getexif()
        for tag, val in exif.items():
            out[f"exif:{ExifTags.TAGS.get(tag, str(tag))}"] = str(val)[:200]
        for tag, val in exif.get_ifd(0x8769).items():
            out[f"exif:{ExifTags.TAGS.get(tag, str(tag))}"] = str(val)[:200]
    except Exception:  # noqa: BLE001
        pass
    for k, v in (im.info or {}).items():
        if k in ("icc_profile", "exif", "dpi", "jfif", "jfif_version", "jfif_unit", "jfif_density"):
            continue
        if isinstance(v, (str, bytes)):
            s = v.decode("latin-1", "replace") if isinstance(v, bytes) else v
            out[f"info:{k}"] = s[:500]
    if b"c2pa" in data or b"jumb" in data:
        out["c2pa"] = "present"
    return out


# --------------------------------------------------------------------------- references


@dataclass
class FaceProfile:
    """What the reference comparison needs from one face (upload or reference)."""

    stats: dict[str, float]  # face.* features of its loose crop
    embedding: np.ndarray | None
    geometry: np.ndarray  # log landmark ratios, see _geometry
    emb_inner: np.ndarray | None = None  # see identity_embeddings
    emb_outer: np.ndarray | None = None
    emb_context: np.ndarray | None = None


_GEOM_NAMES = ("mouth", "eye_mouth", "nose", "jaw", "chin", "face_h")


def _geometry(face: DetectedFace) -> np.ndarray:
    """Pose-tolerant-ish log ratios of landmark distances, scaled by the eye distance.

    A face swap replaces the inner face of another person's head: the jaw and face
    outline keep the target's proportions, the inner face takes the claimed person's.
    """
    lm = np.asarray(face.landmarks, np.float32)
    eyes = np.linalg.norm(lm[1] - lm[0]) + _EPS
    eye_c = (lm[0] + lm[1]) / 2
    mouth_c = (lm[3] + lm[4]) / 2
    out = [np.linalg.norm(lm[4] - lm[3]) / eyes, np.linalg.norm(mouth_c - eye_c) / eyes]
    pts = _landmarks68(face)
    if pts is not None:
        out += [
            np.linalg.norm(pts[33] - pts[27]) / eyes,
            np.linalg.norm(pts[16] - pts[0]) / eyes,
            np.linalg.norm(pts[8] - pts[57]) / eyes,
            np.linalg.norm(pts[8] - (pts[19] + pts[24]) / 2) / eyes,
        ]
    else:
        out += [np.nan] * 4
    return np.log(np.maximum(np.asarray(out, np.float64), _EPS))


def face_profile(
    crop: np.ndarray,
    face: DetectedFace,
    embedding: np.ndarray | None,
    embedder=None,
    stats: dict[str, float] | None = None,
    image: np.ndarray | None = None,
) -> FaceProfile:
    """Everything the reference comparison needs from one face. With an ``embedder``
    the identity vectors are (re)computed from the crop, replacing ``embedding``;
    with the whole ``image`` too, the context vector (see identity_embeddings)."""
    stats = stats if stats is not None else face_features(crop, face)
    inner = outer = context = None
    if embedder is not None:
        embedding, inner, outer, context = identity_embeddings(embedder, crop, face, image)
    return FaceProfile(stats, embedding, _geometry(face), inner, outer, context)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + _EPS))


# face.* statistics compared with the references, as upload minus reference mean.
_REF_STAT_KEYS = (
    "noise",
    "sharp",
    "noise_io",
    "sharp_io",
    "chan_corr",
    "spec_slope",
    "spec_hf",
    "spec_hf_dev",
    "sat_mean",
    "lab_a",
    "lab_b",
)

REF_FEATURE_NAMES = (
    ["ref.available", "ref.id_sim_max", "ref.id_sim_mean", "ref.id_sim_rel"]
    + ["ref.sim_inner", "ref.sim_outer", "ref.sim_io_gap"]
    + ["ref.id_sim_min", "ref.id_gap_refs", "ref.id_below_refs", "ref.inner_gap_refs"]
    + ["ref.ctx_sim_max", "ref.ctx_sim_mean", "ref.ctx_gap", "ref.ctx_gap_refs"]
    + [f"ref.d_{k}" for k in _REF_STAT_KEYS]
    + [f"ref.absz_{k}" for k in ("noise", "sharp", "spec_hf", "lab_a", "lab_b")]
    + ["ref.geom_dist", "ref.geom_jaw"]
)

ID_FEATURE_NAMES = ("id.inner_outer", "id.inner_whole", "id.outer_whole", "id.context_whole")


def identity_self_features(p: FaceProfile) -> dict[str, float]:
    """``id.*``: how alike the upload's own inner face, surroundings and whole face are
    to each other as identities (0 without an embedder)."""
    feats = dict.fromkeys(ID_FEATURE_NAMES, 0.0)
    if p.embedding is not None and p.emb_inner is not None and p.emb_outer is not None:
        feats["id.inner_outer"] = _cos(p.emb_inner, p.emb_outer)
        feats["id.inner_whole"] = _cos(p.emb_inner, p.embedding)
        feats["id.outer_whole"] = _cos(p.emb_outer, p.embedding)
    if p.embedding is not None and p.emb_context is not None:
        feats["id.context_whole"] = _cos(p.emb_context, p.embedding)
    return feats


def loo_best(vecs: Sequence[np.ndarray]) -> np.ndarray:
    """For each vector, its best cosine to the others (how well each reference photo
    of the person is matched by her other reference photos)."""
    m = np.array([[_cos(a, b) for b in vecs] for a in vecs])
    np.fill_diagonal(m, -np.inf)
    return m.max(axis=1)


def reference_features(
    upload: FaceProfile,
    refs: Sequence[FaceProfile],
    identity_similarity: float | None = None,
) -> dict[str, float]:
    """``ref.*``: the upload face against the claimed person's authentic references."""
    feats = dict.fromkeys(REF_FEATURE_NAMES, 0.0)
    if not refs:
        return feats
    feats["ref.available"] = 1.0
    embs = [r.embedding for r in refs if r.embedding is not None]
    if upload.embedding is not None and embs:
        sims = [_cos(upload.embedding, e) for e in embs]
        feats["ref.id_sim_max"] = max(sims)
        feats["ref.id_sim_mean"] = float(np.mean(sims))
        feats["ref.id_sim_min"] = min(sims)
        if len(embs) >= 2:
            # How the upload compares with how alike the references are to each other:
            # some people's photos vary more (age, make-up) than others'. "This face
            # matches her less well than her real photos match each other" is evidence.
            pair = [
                _cos(embs[i], embs[j]) for i in range(len(embs)) for j in range(i + 1, len(embs))
            ]
            feats["ref.id_sim_rel"] = feats["ref.id_sim_mean"] - float(np.mean(pair))
            loo = loo_best(embs)
            feats["ref.id_gap_refs"] = feats["ref.id_sim_max"] - float(np.median(loo))
            feats["ref.id_below_refs"] = float(np.mean(np.asarray(sims) < loo.min()))
        inn = [r.emb_inner for r in refs if r.emb_inner is not None]
        out = [r.emb_outer for r in refs if r.emb_outer is not None]
        if upload.emb_inner is not None and upload.emb_outer is not None and inn and out:
            # Inner face like the person but surroundings less so: the swap signature.
            feats["ref.sim_inner"] = max(_cos(upload.emb_inner, e) for e in inn)
            feats["ref.sim_outer"] = max(_cos(upload.emb_outer, e) for e in out)
            feats["ref.sim_io_gap"] = feats["ref.sim_inner"] - feats["ref.sim_outer"]
            if len(inn) >= 2:
                feats["ref.inner_gap_refs"] = feats["ref.sim_inner"] - float(
                    np.median(loo_best(inn))
                )
        ctx = [r.emb_context for r in refs if r.emb_context is not None]
        if upload.emb_context is not None and ctx:
            # The face with its hair, ears, outline and neck: a swap keeps the target's.
            csims = [_cos(upload.emb_context, e) for e in ctx]
            feats["ref.ctx_sim_max"] = max(csims)
            feats["ref.ctx_sim_mean"] = float(np.mean(csims))
            feats["ref.ctx_gap"] = feats["ref.ctx_sim_max"] - feats["ref.id_sim_max"]
            if len(ctx) >= 2:
                feats["ref.ctx_gap_refs"] = feats["ref.ctx_sim_max"] - float(
                    np.median(loo_best(ctx))
                )
    elif identity_similarity is not None:
        feats["ref.id_sim_max"] = feats["ref.id_sim_mean"] = float(identity_similarity)
    for k in _REF_STAT_KEYS:
        vals = np.array([r.stats[f"face.{k}"] for r in refs])
        feats[f"ref.d_{k}"] = float(upload.stats[f"face.{k}"] - vals.mean())
    for k in ("noise", "sharp", "spec_hf", "lab_a", "lab_b"):
        vals = np.array([r.stats[f"face.{k}"] for r in refs])
        # Spread floor: one reference says little about a person's variability.
        spread = max(float(vals.std()), 0.25)
        feats[f"ref.absz_{k}"] = float(abs(upload.stats[f"face.{k}"] - vals.mean()) / spread)
    geo = np.array([r.geometry for r in refs])
    med = np.nanmedian(geo, axis=0) if np.isfinite(geo).any() else np.full(len(_GEOM_NAMES), np.nan)
    diff = np.abs(upload.geometry - med)
    feats["ref.geom_dist"] = float(np.nanmean(diff)) if np.isfinite(diff).any() else 0.0
    jaw = diff[_GEOM_NAMES.index("jaw")]
    feats["ref.geom_jaw"] = float(jaw) if np.isfinite(jaw) else 0.0
    return feats


# --------------------------------------------------------------------------- entry point


def own_features(inp: ForensicInput, groups: Collection[str] | None = None) -> dict[str, float]:
    """Every group that needs only the upload itself (face, image, jpeg, meta); with
    ``groups``, only the image, jpeg and meta groups named there (the face statistics
    are always computed: the ``ref.*`` comparison needs them)."""
    feats = face_features(inp.face_crop, inp.face)
    if groups is None or "image" in groups:
        feats.update(image_features(inp.image, inp.face))
    if groups is None or "jpeg" in groups:
        feats.update(jpeg_features(inp.image))
    if groups is None or "meta" in groups:
        feats.update(meta_features(inp.metadata))
    return feats


def reference_profiles(refs: Sequence[ReferenceView], embedder=None) -> list[FaceProfile]:
    return [
        face_profile(r.face_crop, r.face, r.embedding, embedder, image=r.image) for r in refs
    ]


def extract_features(
    inp: ForensicInput,
    embedder=None,
    ref_profiles: Sequence[FaceProfile] | None = None,
    groups: Collection[str] | None = None,
) -> dict[str, float]:
    """All groups as one dict of finite floats (see the module docstring); ``groups``:
    skip the image, jpeg and meta groups not named there (a head that does not use
    them need not pay for them; see ``own_features``).

    ``embedder`` (a FaceBackend: the head's identity backbone) recomputes identity
    vectors from the crops, so the ``ref.*`` similarities mean the same whatever backend
    matched the face; without it the embeddings in ``inp`` are used and the inner/outer features
    stay neutral. ``ref_profiles`` lets a caller reuse profiles of its references.
    """
    feats = own_features(inp, groups)
    stats = {k: v for k, v in feats.items() if k.startswith("face.")}
    upload = face_profile(inp.face_crop, inp.face, inp.embedding, embedder, stats, inp.image)
    if ref_profiles is None:
        ref_profiles = reference_profiles(inp.references, embedder)
    feats.update(identity_self_features(upload))
    feats.update(reference_features(upload, ref_profiles, inp.identity_similarity))
    return {k: (float(v) if math.isfinite(v) else 0.0) for k, v in feats.items()}


# --------------------------------------------------------------------------- identity parts


def face_in_crop(face: DetectedFace, size: int = FORENSIC_CROP_SIZE) -> DetectedFace:
    """The same face with its box and landmarks mapped into loose-crop coordinates."""
    ox, oy, s = _crop_transform(face, size)
    x1, y1, x2, y2 = face.box
    extra = {}
    pts = _landmarks68(face)
    if pts is not None:
        extra["landmarks68"] = ((pts - [ox, oy]) * s).tolist()
    return DetectedFace(
        ((x1 - ox) * s, (y1 - oy) * s, (x2 - ox) * s, (y2 - oy) * s),
        ((np.asarray(face.landmarks, np.float32) - [ox, oy]) * s).astype(np.float32),
        face.score,
        extra,
    )


def inner_outer_views(crop: np.ndarray, face: DetectedFace) -> tuple[np.ndarray, np.ndarray]:
    """Two copies of the loose crop: only the inner face, and everything but it.

    A face swap puts the claimed person's inner face into another person's head; an
    identity embedder shown each part separately then sees two different people.
    """
    size = crop.shape[0]
    inner, band, _outer = face_masks(face, size)
    hull = inner | band
    grey = np.full_like(crop, 128)
    inner_only = np.where(hull[..., None], crop, grey)
    fill = (
        crop[inner].mean(axis=0).astype(np.uint8) if inner.any() else np.array([128] * 3, np.uint8)
    )
    outer_only = np.where(hull[..., None], fill[None, None, :], crop).astype(np.uint8)
    return np.ascontiguousarray(inner_only), np.ascontiguousarray(outer_only)


# The context view: the 5-point alignment with the face shrunk to 1/CONTEXT_ZOOM of the
# chip, so the chip holds hair, ears, face outline and neck. Chosen on faces-dev's
# leave-one-out rows among 1.0-2.0 (the wider, the better a swap is told apart:
# similarity to the references AUC 0.78 at 1.0, 0.92 at 2.0 with MobileFaceNet).
CONTEXT_ZOOM = 2.0


def _zoomed(face: DetectedFace, zoom: float) -> DetectedFace:
    lm = np.asarray(face.landmarks, np.float32)
    c = lm.mean(axis=0)
    return DetectedFace(face.box, ((lm - c) * zoom + c).astype(np.float32), face.score, {})


def identity_embeddings(
    embedder, crop: np.ndarray, face: DetectedFace, image: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Identity vectors of the whole face, the inner-face-only and the surroundings-only
    views (from the loose crop, so uploads and references are treated alike), and of
    the context view (from ``image``, which the loose crop is too tight for; None
    without an image, and with dlib, whose chip is aligned on 68 points and whose
    head predates it). ``embedder`` is a core.faces FaceBackend: the one the detector's
    head was trained with (``backbones.identity``: mobilefacenet, or dlib)."""
    local = face_in_crop(face, crop.shape[0])
    a, b = inner_outer_views(crop, face)
    chips = [embedder.align(v, local) for v in (crop, a, b)]
    with_context = image is not None and getattr(embedder, "name", "") != "dlib"
    if with_context:
        chips.append(embedder.align(image, _zoomed(face, CONTEXT_ZOOM)))
    embs = embedder.embed_chips(chips)  # one batch
    return embs[0], embs[1], embs[2], (embs[3] if with_context else None)


@lru_cache(maxsize=1)
def feature_names() -> tuple[str, ...]:
    """Every name extract_features produces (computed once on a synthetic face)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    lm = np.array([[36, 40], [60, 40], [48, 52], [38, 64], [58, 64]], np.float32)
    face = DetectedFace((24.0, 24.0, 72.0, 72.0), lm, 1.0)
    from core.faces.crops import loose_crop

    inp = ForensicInput(image=img, face=face, face_crop=loose_crop(img, face))
    return tuple(extract_features(inp))
