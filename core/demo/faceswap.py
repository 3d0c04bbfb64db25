"""Classic graphics face swap (the FaceForensics++ "FaceSwap" method).

The source face (the identity to impersonate) is warped onto the target face with
a piecewise-affine warp over a Delaunay triangulation of the 68 iBUG landmarks,
colour-corrected to the target's skin (Reinhard transfer in Lab) and blended into
the target with ``cv2.seamlessClone`` inside the convex hull of the landmarks.
No learned model is involved, so the demo can make its own fakes offline.

One departure from the pure method: the destination landmarks are moved part of
the way towards the source's own face shape (after a similarity alignment to the
target's pose). Keeping the target's geometry exactly, as FaceForensics++ does,
leaves much of the target's identity in place for a geometry-heavy embedder like
dlib's; see ``shape_transfer``.

Everything outside the blended face region is left bit-identical: the clone is
done in a window around the face and only masked pixels are written back.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

# iBUG 68-point layout.
_JAW = slice(0, 17)
_BROWS = slice(17, 27)
_STABLE = list(range(27, 48))  # nose and eyes: the rigid part, used for pose alignment


def _as_pts(pts68: np.ndarray | list) -> np.ndarray:
    pts = np.asarray(pts68, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected 68x2 landmarks, got {pts.shape}")
    return pts


def with_forehead(pts68: np.ndarray, forehead: float) -> np.ndarray:
    """The 68 points plus 10 points above the brows (78 x 2).

    The 68-point hull stops at the brows, which leaves the target's brow ridge and
    forehead in place. Each brow point is pushed along the face's up direction
    (chin to nose bridge) by ``forehead`` times that distance.
    """
    up = pts68[27] - pts68[8]
    return np.vstack([pts68, pts68[_BROWS] + up * forehead])


def face_mask(pts: np.ndarray, shape: tuple[int, ...], erode_frac: float = 0.03) -> np.ndarray:
    """Binary (0/255) convex-hull mask of ``pts``, eroded by a fraction of the face width
    so that the blend seam sits inside the face rather than on its outline."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 255)
    k = max(1, int(round(float(np.ptp(pts[:, 0])) * erode_frac)))
    return cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))


def _warp_triangles(
    src: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Piecewise-affine warp of ``src`` so that ``src_pts`` land on ``dst_pts``.

    Each triangle is warped within its bounding rectangle only, so the cost follows
    the face size rather than the image size.
    """
    h, w = shape[:2]
    out = np.zeros((h, w, 3), np.float32)
    srcf = src.astype(np.float32)
    for tri in Delaunay(dst_pts).simplices:
        s = src_pts[tri].astype(np.float32)
        d = dst_pts[tri].astype(np.float32)
        x, y, rw, rh = cv2.boundingRect(d)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + rw, w), min(y + rh, h)
        if x1 <= x0 or y1 <= y0:
            continue
        d_local = d - np.float32([x0, y0])
        patch = cv2.warpAffine(
            srcf,
            cv2.getAffineTransform(s, d_local),
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillConvexPoly(alpha, np.round(d_local).astype(np.int32), 1.0, cv2.LINE_AA)
        alpha = alpha[..., None]
        region = out[y0:y1, x0:x1]
        # Overwrite rather than add, so shared edges are not counted twice.
        region[:] = region * (1.0 - alpha) + patch * alpha
    return out


def _colour_transfer(
    face: np.ndarray, face_mask_: np.ndarray, target: np.ndarray, skin_mask: np.ndarray
) -> np.ndarray:
    """Reinhard mean/std transfer in Lab: stats of the warped face (``face_mask_``) are
    mapped onto those of the target's own face (``skin_mask``).

    A grey-scale source (a/b channels flat) gets the target's mean chroma, so a
    black-and-white portrait becomes a plausible colour face.
    """
    src_lab = cv2.cvtColor(np.clip(face, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB)
    src_lab = src_lab.astype(np.float32)
    tgt_lab = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    fm, sm = face_mask_ > 0, skin_mask > 0
    out = np.empty_like(src_lab)
    for c in range(3):
        s_vals, t_vals = src_lab[..., c][fm], tgt_lab[..., c][sm]
        s_mu, s_sd = float(s_vals.mean()), float(s_vals.std())
        t_mu, t_sd = float(t_vals.mean()), float(t_vals.std())
        if c > 0 and s_sd < 1.0:
            out[..., c] = t_mu
        else:
            out[..., c] = (src_lab[..., c] - s_mu) * (t_sd / max(s_sd, 1e-6)) + t_mu
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def destination_points(
    source_pts68: np.ndarray | list,
    target_pts68: np.ndarray | list,
    shape_transfer: float = 1.0,
    jaw_transfer: float = 0.5,
) -> np.ndarray:
    """Where the source's landmarks go on the target: the target's points moved towards
    the source's points after a similarity alignment (rotation, scale, shift) on the
    rigid eye/nose points. 0 keeps the target's geometry (pure FaceForensics++ FaceSwap),
    1 uses the source's face shape in the target's pose and place."""
    src = _as_pts(source_pts68)
    tgt = _as_pts(target_pts68)
    m, _ = cv2.estimateAffinePartial2D(
        src[_STABLE].astype(np.float32), tgt[_STABLE].astype(np.float32)
    )
    if m is None:  # degenerate landmarks; fall back to the target's geometry
        return tgt
    aligned = src @ m[:, :2].T + m[:, 2]
    weight = np.full((68, 1), float(shape_transfer))
    weight[_JAW] = jaw_transfer
    return tgt + weight * (aligned - tgt)


def swap_face(
    source_rgb: np.ndarray,
    source_pts68: np.ndarray | list,
    target_rgb: np.ndarray,
    target_pts68: np.ndarray | list,
    *,
    shape_transfer: float = 1.0,
    jaw_transfer: float = 0.5,
    forehead: float = 0.25,
    feather: bool = True,
    poisson: bool = True,
) -> np.ndarray:
    """Put the source face on the target face; returns RGB uint8 of the target's size.

    Landmarks are (68, 2) pixel coordinates in iBUG order (the dlib backend's
    ``extra["landmarks68"]``). ``feather`` softens the inner edge of the Poisson
    blend with a blurred alpha, which hides the halo seamlessClone leaves where the
    mask crosses hair. Pixels outside the face hull are unchanged.
    """
    target = np.ascontiguousarray(target_rgb[..., :3], dtype=np.uint8)
    source = np.ascontiguousarray(source_rgb[..., :3], dtype=np.uint8)
    tgt68 = _as_pts(target_pts68)
    dst68 = destination_points(source_pts68, tgt68, shape_transfer, jaw_transfer)
    src_pts = with_forehead(_as_pts(source_pts68), forehead)
    dst_pts = with_forehead(dst68, forehead)
    h, w = target.shape[:2]

    # Work in a window around the face with room for the Poisson boundary: fast on large
    # photos, and seamlessClone misbehaves when the mask touches the image border.
    face_w = float(np.ptp(dst_pts[:, 0]))
    margin = int(round(face_w * 0.25)) + 4
    x0 = max(int(np.floor(dst_pts[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(dst_pts[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(dst_pts[:, 0].max())) + margin, w)
    y1 = min(int(np.ceil(dst_pts[:, 1].max())) + margin, h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return target.copy()
    pad = 3
    win = cv2.copyMakeBorder(target[y0:y1, x0:x1], pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    offset = np.array([x0 - pad, y0 - pad], np.float64)
    local = dst_pts - offset

    warped = _warp_triangles(source, src_pts, local, win.shape)
    mask = face_mask(local, win.shape)
    mask[:pad], mask[-pad:], mask[:, :pad], mask[:, -pad:] = 0, 0, 0, 0
    if not mask.any():
        return target.copy()
    skin = face_mask(tgt68 - offset, win.shape, erode_frac=0.1)
    if not skin.any():
        skin = mask
    corrected = _colour_transfer(warped, mask, win, skin)

    # seamlessClone centres the mask's bounding box on ``center``.
    bx, by, bw, bh = cv2.boundingRect(mask)
    cloned = cv2.seamlessClone(
        cv2.cvtColor(corrected, cv2.COLOR_RGB2BGR),
        cv2.cvtColor(win, cv2.COLOR_RGB2BGR),
        mask.copy(),  # OpenCV 5 writes into the mask it is given
        (bx + bw // 2, by + bh // 2),
        cv2.NORMAL_CLONE,
    )
    result = cv2.cvtColor(cloned, cv2.COLOR_BGR2RGB).astype(np.float32)
    if not poisson:
        result = corrected.astype(np.float32)
    if feather:
        k = max(3, int(face_w * 0.08)) | 1
        alpha = cv2.GaussianBlur(
            cv2.erode(mask, np.ones((k, k), np.uint8)), (2 * k + 1, 2 * k + 1), 0
        )
        alpha = alpha.astype(np.float32)[..., None] / 255.0
        result = result * alpha + win.astype(np.float32) * (1.0 - alpha)

    out = target.copy()
    inside = mask[pad:-pad, pad:-pad] > 0
    out[y0:y1, x0:x1][inside] = np.round(result[pad:-pad, pad:-pad][inside]).astype(np.uint8)
    return out
