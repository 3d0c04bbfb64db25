"""Add identity-preserving fakes (core.demo.splice) of a manifest's people to a copy of
its manifest, to measure them as their own family with the honest protocol.

For every named person with a real photo, the first such photo with one usable face is
the donor; it gives three fakes that keep that face: the head spliced onto a person of
insightface's t1.jpg (cycling through four of its faces, seamlessClone), and the
photo with its background and with its body inpainted (cv2.inpaint). Each fake names
its donor's source (so the leakage groups keep it with its donor's figure and person)
and the donor's file in ``notes`` (``donor=PATH``), so an evaluation can leave the
donor photo out of the fake's references (the platform need not hold the very photo a
manipulator used). New images are written under OUT (never into the repository);
the rows of the input manifest are copied with absolute paths.

    .venv/bin/python scripts/make_edit_set.py ../shared/data/faces-dev/manifest.csv out/edit-set
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.demo.dataset import MANIFEST_COLUMNS, insightface_image, load_manifest  # noqa: E402
from core.demo.splice import HeadFrame, inpaint_around_face, splice_head  # noqa: E402

HOST_FACES = (1, 3, 4, 5)  # t1.jpg faces with frontal-ish poses


def _crop_around(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    f = HeadFrame.of(pts)
    side = 3.2 * f.height
    cx, cy = f.chin + f.up * f.height * 0.4
    h, w = img.shape[:2]
    x0 = int(np.clip(cx - side / 2, 0, max(w - side, 0)))
    y0 = int(np.clip(cy - side / 2, 0, max(h - side, 0)))
    return np.ascontiguousarray(img[y0 : y0 + round(side), x0 : x0 + round(side)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()

    from core.faces.dlib_backend import DlibFaceBackend
    from core.intake import IntakeLimits, decode_image

    det = DlibFaceBackend(load_encoder=False)
    det.load()
    rows = load_manifest(args.manifest)
    t1 = insightface_image("t1.jpg")
    hosts = det.detect(t1)
    host_pts = [np.asarray(hosts[i].extra["landmarks68"], np.float64) for i in HOST_FACES]
    limits = IntakeLimits(max_bytes=1 << 31, max_pixels=1 << 31, max_side=1 << 20)
    out_img = args.out / "images"
    out_img.mkdir(parents=True, exist_ok=True)
    new_rows: list[dict[str, str]] = []
    done: set[str] = set()
    n_host = 0
    for r in rows:
        if r.label != "real" or len(r.identities) != 1 or r.identities[0] in done:
            continue
        name = r.identities[0]
        rgb = decode_image(r.path.read_bytes(), limits).pixels
        faces = det.detect(rgb)
        if len(faces) != 1:  # one face: no doubt whose head is taken
            continue
        pts = np.asarray(faces[0].extra["landmarks68"], np.float64)
        done.add(name)
        slug = "".join(c if c.isalnum() else "_" for c in name)
        made = []
        try:
            k = n_host % len(HOST_FACES)
            edit = splice_head(rgb, pts, t1, host_pts[k])
            made.append(
                ("splice", _crop_around(edit.image, edit.landmarks68), f"t1 face {HOST_FACES[k]}")
            )
            n_host += 1
        except ValueError as exc:
            print(f"{r.path.name}: no splice ({exc})", file=sys.stderr)
        for region in ("background", "body"):
            try:
                made.append(("inpaint", inpaint_around_face(rgb, pts, region).image, region))
            except ValueError as exc:
                print(f"{r.path.name}: no {region} inpaint ({exc})", file=sys.stderr)
        for method, img, what in made:
            fname = f"images/{method}_{slug}_{what.replace(' ', '')}.png"
            cv2.imwrite(str(args.out / fname), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            new_rows.append(
                {
                    "path": fname,
                    "label": "fake",
                    "identity": name,
                    "method": method,
                    "source": f"{r.source} ({method})",
                    "licence": f"{r.licence}; made by core.demo.splice",
                    "notes": f"donor={r.path}; {what}",
                }
            )
    with (args.out / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    "path": str(r.path),
                    "label": r.label,
                    "identity": ";".join(r.identities),
                    "method": r.method,
                    "source": r.source,
                    "licence": r.licence,
                    "notes": r.notes,
                }
            )
        w.writerows(new_rows)
    counts = {m: sum(x["method"] == m for x in new_rows) for m in ("splice", "inpaint")}
    print(json.dumps({"people": len(done), "rows": len(rows) + len(new_rows), **counts}))


if __name__ == "__main__":
    main()
