"""Identity-preserving manipulations: the face is authentic, the scene around it is not.

A face swap or an ID-conditioned generator changes the face; the fakes made here keep
the claimed person's own face, pixel for pixel, and change what surrounds it, the case
the research left open:

- :func:`splice_head`: an authentic head (face and hair) cut from one photo and
  blended onto another person's body in another photo with Poisson blending
  (``cv2.seamlessClone``), aligned to that person's face;
- :func:`inpaint_around_face`: the background, or the body below the chin, of an
  authentic photo filled by inpainting (``cv2.inpaint``, Telea), the face untouched.

The regions are drawn from the 68 iBUG landmarks: a head ellipse above the jaw (hair
included) and a bust (head plus neck and shoulders). No learned model is involved, so
the demo and the tests make these fakes offline from images that packages ship.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_CHIN, _BROW_L, _BROW_R, _JAW_L, _JAW_R = 8, 19, 24, 0, 16


def _pts(pts68: np.ndarray | list) -> np.ndarray:
    pts = np.asarray(pts68, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected 68x2 landmarks, got {pts.shape}")
    return pts


@dataclass(frozen=True)
class HeadFrame:
    """Where a head is, from its landmarks: chin, unit up vector, face height (chin to
    brows) and width (jaw corners)."""

    chin: np.ndarray
    up: np.ndarray
    height: float
    width: float

    @classmethod
    def of(cls, pts68: np.ndarray | list) -> HeadFrame:
        p = _pts(pts68)
        brows = (p[_BROW_L] + p[_BROW_R]) / 2
        v = brows - p[_CHIN]
        h = float(np.linalg.norm(v))
        if h < 1.0:
            raise ValueError("degenerate landmarks: chin and brows coincide")
        return cls(p[_CHIN], v / h, h, float(np.linalg.norm(p[_JAW_R] - p[_JAW_L])))

    def ellipse(self, above: float = 0.85, below: float = 0.12, side: float = 0.72):
        """(centre, (semi-axis across, semi-axis along), angle in degrees) of an ellipse
        from ``below`` face heights under the chin to ``above`` face heights over the
        brows, ``side`` face widths to each side: face, hair and ears."""
        lo = self.chin - self.up * self.height * below
        hi = self.chin + self.up * self.height * (1.0 + above)
        centre = (lo + hi) / 2
        along = float(np.linalg.norm(hi - lo)) / 2
        angle = float(np.degrees(np.arctan2(self.up[1], self.up[0]))) + 90.0
        return centre, (self.width * side, along), angle


def head_mask(shape: tuple[int, ...], pts68: np.ndarray | list, bust: bool = False) -> np.ndarray:
    """0/255 mask of the head (``bust``: with neck and shoulders down to 1.3 face
    heights under the chin, widening to 2.6 face widths)."""
    f = HeadFrame.of(pts68)
    mask = np.zeros(shape[:2], np.uint8)
    centre, axes, angle = f.ellipse()
    cv2.ellipse(
        mask,
        (round(centre[0]), round(centre[1])),
        (max(1, round(axes[0])), max(1, round(axes[1]))),
        angle,
        0,
        360,
        255,
        -1,
    )
    if bust:
        across = np.array([-f.up[1], f.up[0]])  # perpendicular to up
        neck_top = f.chin + f.up * f.height * 0.2
        neck_low = f.chin - f.up * f.height * 0.45
        low = f.chin - f.up * f.height * 1.3
        poly = np.array(
            [
                neck_top + across * f.width * 0.33,
                neck_low + across * f.width * 0.4,
                low + across * f.width * 1.3,
                low - across * f.width * 1.3,
                neck_low - across * f.width * 0.4,
                neck_top - across * f.width * 0.33,
            ]
        )
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 255)
    return mask


@dataclass
class Edit:
    """An edited image, where its authentic face now is, and what was changed."""

    image: np.ndarray  # RGB uint8
    landmarks68: np.ndarray  # the authentic face's landmarks in ``image``
    mask: np.ndarray  # 0/255: pixels taken from elsewhere (splice) or filled (inpaint)


def _clone(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-blend ``src`` into ``dst`` (same size) inside ``mask``, in place; the
    blended image and the mask actually used."""
    m = mask.copy()
    m[:1], m[-1:], m[:, :1], m[:, -1:] = 0, 0, 0, 0  # seamlessClone needs a border
    ys, xs = np.nonzero(m)
    if not len(xs):
        raise ValueError("the head falls outside the destination image")
    # seamlessClone centres the mask's bounding box on ``p``: its own centre keeps it
    # in place. (OpenCV rounds odd sizes down, so the box is made even.)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    if (x1 - x0) % 2:
        x1 = x1 - 1 if x1 - 1 > x0 else x1 + 1
        m[:, x1:] = 0
    if (y1 - y0) % 2:
        y1 = y1 - 1 if y1 - 1 > y0 else y1 + 1
        m[y1:, :] = 0
    p = ((x0 + x1) // 2, (y0 + y1) // 2)
    src_bgr = cv2.cvtColor(src, cv2.COLOR_RGB2BGR)
    dst_bgr = cv2.cvtColor(dst, cv2.COLOR_RGB2BGR)
    # (OpenCV 5 writes into the mask it is given.)
    out = cv2.seamlessClone(src_bgr, dst_bgr, m.copy(), p, cv2.NORMAL_CLONE)
    out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    # Only masked pixels change: everything else stays the destination's bytes.
    keep = m == 0
    out[keep] = dst[keep]
    return out, m


def splice_head(
    donor: np.ndarray,
    donor_pts68: np.ndarray | list,
    host: np.ndarray,
    host_pts68: np.ndarray | list,
) -> Edit:
    """Blend the donor's authentic head onto the host person's body, replacing the
    host's head: the donor is mapped onto the host face by a similarity transform
    fitted on all 68 points (rotation, scale, shift only: the face keeps its own
    shape), and the mask covers both heads, so none of the host's face is left."""
    d, h = _pts(donor_pts68), _pts(host_pts68)
    M, _ = cv2.estimateAffinePartial2D(d.astype(np.float32), h.astype(np.float32))
    if M is None:
        raise ValueError("could not align the donor face to the host face")
    hh, ww = host.shape[:2]
    warped = cv2.warpAffine(
        donor, M, (ww, hh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    pts = d @ M[:, :2].T + M[:, 2]
    # Only pixels that came from inside the donor image may be used.
    inside = cv2.warpAffine(
        np.full(donor.shape[:2], 255, np.uint8), M, (ww, hh), flags=cv2.INTER_NEAREST
    )
    mask = head_mask(host.shape, pts) | head_mask(host.shape, h)
    mask &= cv2.erode(inside, np.ones((3, 3), np.uint8))
    image, used = _clone(warped, host, mask)
    return Edit(image, pts, used)


def inpaint_around_face(
    rgb: np.ndarray,
    pts68: np.ndarray | list,
    region: str = "background",
    *,
    radius: int = 7,
    work_side: int = 384,
) -> Edit:
    """Fill a region around an authentic face by inpainting; the head is kept.

    ``region``: "background" (everything outside the bust), or "body" (the bust below
    the head: neck, shoulders, clothes). Inpainting runs on a copy scaled to at most
    ``work_side`` pixels (Telea's cost grows with the hole's area and width), and the
    result is written back into the region only; every other pixel is unchanged.
    """
    if region not in ("background", "body"):
        raise ValueError(f"region must be background or body, not {region!r}")
    pts = _pts(pts68)
    head = head_mask(rgb.shape, pts)
    bust = head_mask(rgb.shape, pts, bust=True)
    hole = (bust == 0) if region == "background" else (bust > 0) & (head == 0)
    # A margin around the kept head, so the fill does not copy its outline outwards.
    keep = cv2.dilate(head if region == "body" else bust, np.ones((5, 5), np.uint8))
    hole = (hole & (keep == 0)).astype(np.uint8) * 255
    if not hole.any():
        raise ValueError(f"no {region} around this face to inpaint")
    h, w = rgb.shape[:2]
    s = min(1.0, work_side / max(h, w))
    small = cv2.resize(
        rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
    )
    small_hole = cv2.resize(hole, small.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    small_hole = cv2.dilate(small_hole, np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(
        cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
        small_hole,
        max(1, round(radius * s)),
        cv2.INPAINT_TELEA,
    )
    filled = cv2.resize(
        cv2.cvtColor(filled, cv2.COLOR_BGR2RGB), (w, h), interpolation=cv2.INTER_CUBIC
    )
    out = rgb.copy()
    sel = hole > 0
    out[sel] = filled[sel]
    return Edit(out, pts, hole)


# ---------------------------------------------------------------- the demo's edits

# (file name, method, what is done): Eileen Collins' authentic head on two people of
# the group photo t1.jpg (faces 3 and 5 from the left, where the poses agree), and her
# portrait with its background or her body inpainted.
DEMO_EDITS: tuple[tuple[str, str, str], ...] = (
    ("edits/splice_eileen_person3.png", "splice", "t1:3"),
    ("edits/splice_eileen_person5.png", "splice", "t1:5"),
    ("edits/inpaint_eileen_background.png", "inpaint", "background"),
    ("edits/inpaint_eileen_body.png", "inpaint", "body"),
)


@dataclass
class DemoEdit:
    path: str  # relative to the demo set's folder
    method: str  # splice | inpaint
    image: np.ndarray
    notes: str


def demo_edits(
    portrait: np.ndarray,
    portrait_pts68: np.ndarray,
    group: np.ndarray,
    group_pts68: list[np.ndarray],
) -> list[DemoEdit]:
    """The demo set's identity-preserving fakes (DEMO_EDITS) of ``portrait``'s person.
    Splices are cropped around the host person like the demo's face-swap crops."""
    out = []
    for path, method, what in DEMO_EDITS:
        if method == "splice":
            idx = int(what.split(":")[1])
            edit = splice_head(portrait, portrait_pts68, group, group_pts68[idx])
            f = HeadFrame.of(edit.landmarks68)
            side = 3.2 * f.height
            cx, cy = f.chin + f.up * f.height * 0.4
            gh, gw = group.shape[:2]
            x0 = int(np.clip(cx - side / 2, 0, gw - side))
            y0 = int(np.clip(cy - side / 2, 0, gh - side))
            image = np.ascontiguousarray(edit.image[y0 : y0 + round(side), x0 : x0 + round(side)])
            notes = f"head spliced onto face {idx} of the group photo (seamlessClone), crop"
        else:
            image = inpaint_around_face(portrait, portrait_pts68, what).image
            notes = f"{what} around the authentic face inpainted (cv2.inpaint, Telea)"
        out.append(DemoEdit(path, method, image, notes))
    return out
