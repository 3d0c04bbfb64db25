"""Per-image work for evaluation and training, computed once and cached on disk.

Evaluating a detector on a manifest means scoring many (upload face, reference) pairs,
but almost all of the cost is per image or per face and does not depend on which
reference is used: face detection, identity embeddings, and the detector's own
features (forensic statistics, CLIP features, identity vectors of the crop). This
module computes those once per (image, face), caches them as JSON next to each other
under a cache folder (keyed by the file's hash, the face backend and the extractor's
configuration), and leaves only the cheap reference-dependent part to each pair.

Shared by ``core.evaluation.protocol`` (``idwatch eval``), ``core.evaluation.train``
(``idwatch detector train``) and ``scripts/research_offline.py``.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.demo.dataset import ManifestRow, load_manifest
from core.faces.base import DetectedFace, FaceBackend
from core.faces.crops import loose_crop
from core.forensics import features as F
from core.forensics.normalise import Normaliser

log = logging.getLogger(__name__)

Entry = dict[str, Any]  # JSON-able per-face data of one extractor
Progress = Callable[[int, int, str], None]  # (done, total, what)

# 2: HOG detection upsamples only when the native scale finds nothing (issue 8).
CACHE_VERSION = 2


# --------------------------------------------------------------------------- manifest


def read_manifest(path: str | Path) -> list[ManifestRow]:
    return load_manifest(Path(path))


def identity_groups(rows: Sequence[ManifestRow]) -> np.ndarray:
    """One group label per row for identity-disjoint splits: people joined with ';' are
    merged (union-find), so a photo of A and B keeps A and B on the same side; images
    of nobody in particular are grouped by their source (figure, file) instead."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    keys = []
    for r in rows:
        if r.identities:
            for n in r.identities[1:]:
                parent[find("id:" + n)] = find("id:" + r.identities[0])
            keys.append("id:" + r.identities[0])
        else:
            keys.append("src:" + (r.source.split(" (")[0] or r.path.name))
    return np.array([find(k) for k in keys])


def donor_of(row: ManifestRow) -> Path | None:
    """The photo a fake was made from, when its notes name it (``donor=PATH``)."""
    for part in (row.notes or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "donor" and value:
            return Path(value).resolve()
    return None


def pseudo_face(rgb: np.ndarray) -> DetectedFace:
    """Stand-in when no face is found: a central box with textbook landmarks (used by
    the research script only; the evaluation protocol counts such images as misses)."""
    h, w = rgb.shape[:2]
    s = 0.6 * min(h, w)
    x1, y1 = (w - s) / 2, (h - s) / 2
    rel = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.75], [0.65, 0.75]], np.float32)
    return DetectedFace((x1, y1, x1 + s, y1 + s), rel * s + [x1, y1], 0.0, {"pseudo": True})


def _face_to_json(f: DetectedFace) -> dict[str, Any]:
    extra = {k: v for k, v in f.extra.items() if k in ("landmarks68", "pseudo")}
    return {
        "box": [float(v) for v in f.box],
        "landmarks": np.asarray(f.landmarks, np.float32).tolist(),
        "score": float(f.score),
        "extra": extra,
    }


def _face_from_json(d: dict[str, Any]) -> DetectedFace:
    return DetectedFace(
        tuple(d["box"]), np.asarray(d["landmarks"], np.float32), float(d["score"]), d["extra"]
    )


# --------------------------------------------------------------------------- extractors


class FeatureExtractor(ABC):
    """A detector's features, split into a cached per-face ``entry`` and a cheap
    ``features(upload_entry, reference_entries)`` step."""

    name: str = ""  # the detector name written into head files
    reencode_quality: int | None = None  # format-blind: re-encode JPEG before features
    # Random re-encode and resample seeded by content (core.forensics.normalise); when
    # set it replaces ``reencode_quality``.
    normaliser: Normaliser | None = None

    @property
    def key(self) -> str:
        """Cache key: changes whenever cached entries would differ."""
        if self.normaliser is not None:
            return f"{self.name}-v{CACHE_VERSION}-{self.normaliser.key}"
        return f"{self.name}-v{CACHE_VERSION}-q{self.reencode_quality or 0}"

    def preprocess(self) -> dict[str, Any]:
        """What a head trained on these features records as its ``preprocess``."""
        if self.normaliser is not None:
            return {"normalise": self.normaliser.to_dict()}
        if self.reencode_quality:
            return {"reencode_jpeg_quality": int(self.reencode_quality)}
        return {}

    @abstractmethod
    def entry(
        self,
        rgb: np.ndarray,
        face: DetectedFace,
        metadata: dict[str, str],
        embedding: np.ndarray | None,
    ) -> Entry:
        """Reference-independent data of one face; ``rgb`` already prepared."""

    @abstractmethod
    def features(self, upload: Entry, refs: Sequence[Entry]) -> dict[str, float]: ...

    @abstractmethod
    def feature_names(self) -> list[str]: ...

    def backbones(self) -> dict[str, str]:
        return {}

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        return F.reencode_jpeg(rgb, self.reencode_quality) if self.reencode_quality else rgb


def _arr(v: Any) -> np.ndarray | None:
    return None if v is None else np.asarray(v, np.float64)


class OfflineExtractor(FeatureExtractor):
    """The offline detector's features (core.forensics.features): face/image/jpeg/meta
    statistics per face, identity vectors of the crop from ``embedder`` (the head's
    identity backbone: mobilefacenet, or dlib), and the
    ``ref.*`` comparison per pair."""

    name = "offline"

    def __init__(
        self,
        embedder: FaceBackend | None,
        reencode_quality: int | None = 90,
        normaliser: Normaliser | None = None,
    ) -> None:
        self.embedder = embedder
        self.reencode_quality = None if normaliser is not None else reencode_quality
        self.normaliser = normaliser

    @property
    def key(self) -> str:
        # Cached identity vectors depend on the embedder (dlib keeps the older key).
        ident = getattr(self.embedder, "name", "dlib") or "dlib"
        return super().key if ident == "dlib" else f"{super().key}-{ident}-ctx"

    def entry(self, rgb, face, metadata, embedding) -> Entry:
        crop = loose_crop(rgb, face)
        inp_own = F.face_features(crop, face)
        inp_own.update(F.image_features(rgb, face))
        inp_own.update(F.jpeg_features(rgb))
        inp_own.update(F.meta_features(metadata))
        stats = {k: v for k, v in inp_own.items() if k.startswith("face.")}
        prof = F.face_profile(crop, face, embedding, self.embedder, stats, rgb)

        def lst(v):
            return None if v is None else np.asarray(v, np.float64).tolist()

        return {
            "own": {k: float(v) for k, v in inp_own.items()},
            "embedding": lst(prof.embedding),
            "inner": lst(prof.emb_inner),
            "outer": lst(prof.emb_outer),
            "context": lst(prof.emb_context),
            "geometry": lst(prof.geometry),
        }

    @staticmethod
    def profile(e: Entry) -> F.FaceProfile:
        stats = {k: v for k, v in e["own"].items() if k.startswith("face.")}
        return F.FaceProfile(
            stats,
            _arr(e["embedding"]),
            _arr(e["geometry"]),
            _arr(e["inner"]),
            _arr(e["outer"]),
            _arr(e.get("context")),
        )

    def features(self, upload, refs) -> dict[str, float]:
        feats = dict(upload["own"])
        prof = self.profile(upload)
        feats.update(F.identity_self_features(prof))
        feats.update(F.reference_features(prof, [self.profile(r) for r in refs]))
        return {k: (float(v) if np.isfinite(v) else 0.0) for k, v in feats.items()}

    def feature_names(self) -> list[str]:
        return list(F.feature_names())

    def backbones(self) -> dict[str, str]:
        return {
            "forensic": "core.forensics.features (signal statistics)",
            "identity": getattr(self.embedder, "name", "none") or "none",
        }


# --------------------------------------------------------------------------- dataset


class DatasetFeatures:
    """Faces, embeddings and extractor entries of every image of a manifest.

    ``faces[i]`` / ``embeddings[i]`` are filled by ``detect_all``; ``entry(ex, i, k)``
    computes (or reads from the cache) extractor ``ex``'s data for face ``k`` of image
    ``i`` (``k=None``: the pseudo face). Call ``save()`` to persist new entries.
    """

    def __init__(
        self,
        rows: Sequence[ManifestRow],
        backend: FaceBackend,
        cache_dir: Path | None = None,
    ) -> None:
        self.rows = list(rows)
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.faces: list[list[DetectedFace]] = []
        self.embeddings: list[np.ndarray] = []
        self.metadata: list[dict[str, str]] = []
        self._records: list[dict[str, Any]] = []
        self._dirty: set[int] = set()
        self._images: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self.timing: dict[str, float] = defaultdict(float)
        self.real_by_name: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(self.rows):
            if r.label == "real":
                for n in r.identities:
                    self.real_by_name[n].append(i)

    # ------------------------------------------------------------------ images

    def _cache_path(self, i: int) -> Path | None:
        if self.cache_dir is None:
            return None
        h = self._records[i]["sha"] if i < len(self._records) else None
        return self.cache_dir / f"{h}_{self.backend.name}.json" if h else None

    def _decode(self, i: int) -> tuple[np.ndarray, dict[str, str], str]:
        from core.intake import IntakeLimits, decode_image

        data = self.rows[i].path.read_bytes()
        img = decode_image(
            data, IntakeLimits(max_bytes=1 << 31, max_pixels=1 << 31, max_side=1 << 20)
        )
        return img.pixels, img.metadata, img.sha256[:24]

    def _kept(self, key: tuple[int, str], make: Callable[[], np.ndarray]) -> np.ndarray:
        img = self._images.get(key)
        if img is None:
            img = make()
            self._images[key] = img
            if len(self._images) > 8:
                self._images.popitem(last=False)
        else:
            self._images.move_to_end(key)
        return img

    def image(self, i: int, quality: int | None = None) -> np.ndarray:
        """The decoded image (re-encoded at ``quality`` when given); a few kept."""
        if quality:
            return self._kept((i, f"q{quality}"), lambda: F.reencode_jpeg(self.image(i), quality))
        return self._kept((i, "q0"), lambda: self._decode(i)[0])

    def view(
        self,
        ex: FeatureExtractor,
        i: int,
        k: int | None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, DetectedFace]:
        """Image ``i`` and its face ``k`` as extractor ``ex`` sees them (re-encoded, or
        normalised with the face mapped into the normalised image). ``transform``
        changes the decoded pixels first (a variant of the image, same geometry)."""
        face = self.face(i, k)
        base = self.image(i) if transform is None else transform(self.image(i))
        norm = getattr(ex, "normaliser", None)
        if norm is not None:
            rgb, mapped = norm.apply(base, face)
            assert mapped is not None
            return rgb, mapped
        q = ex.reencode_quality
        if q and transform is None:
            return self.image(i, q), face
        return (F.reencode_jpeg(base, q) if q else base), face

    # ------------------------------------------------------------------ detection

    def detect_all(self, progress: Progress | None = None) -> None:
        """Detect and embed every image's faces with the face backend (cached)."""
        import time

        n = len(self.rows)
        for i, row in enumerate(self.rows):
            rgb, meta, sha = self._decode(i)
            self._images[(i, "q0")] = rgb
            if len(self._images) > 8:
                self._images.popitem(last=False)
            rec: dict[str, Any] = {"sha": sha}
            self._records.append(rec)
            path = self._cache_path(i)
            cached = None
            if path is not None and path.exists():
                try:
                    cached = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    cached = None
            if cached and cached.get("version") == CACHE_VERSION:
                rec.update(cached)
                faces = [_face_from_json(d) for d in cached["faces"]]
                embs = np.asarray(cached["embeddings"], np.float32)
                if not faces:
                    embs = np.zeros((0, self.backend.embedding_dim), np.float32)
            else:
                t = time.perf_counter()
                faces = self.backend.detect(rgb)
                self.timing["detect"] += time.perf_counter() - t
                t = time.perf_counter()
                embs = (
                    self.backend.embed(rgb, faces)
                    if faces
                    else np.zeros((0, self.backend.embedding_dim), np.float32)
                )
                self.timing["embed"] += time.perf_counter() - t
                rec.update(
                    version=CACHE_VERSION,
                    path=str(row.path),
                    faces=[_face_to_json(f) for f in faces],
                    embeddings=np.asarray(embs, np.float64).tolist(),
                    entries={},
                )
                self._dirty.add(i)
            rec.setdefault("entries", {})
            self.faces.append(faces)
            self.embeddings.append(np.asarray(embs, np.float32))
            self.metadata.append(meta)
            if progress:
                progress(i + 1, n, row.path.name)
        self.save()

    def face(self, i: int, k: int | None) -> DetectedFace:
        return self.faces[i][k] if k is not None else pseudo_face(self.image(i))

    def entry(
        self,
        ex: FeatureExtractor,
        i: int,
        k: int | None,
        variant: tuple[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    ) -> Entry:
        """Extractor ``ex``'s cached data for face ``k`` of image ``i``; ``variant`` =
        (name, pixel transform) for a modified copy of the image, cached by name."""
        import time

        tag = f":{variant[0]}" if variant else ""
        key = f"{ex.key}{tag}:{'p' if k is None else k}"
        entries = self._records[i]["entries"]
        e = entries.get(key)
        if e is None:
            rgb, face = self.view(ex, i, k, variant[1] if variant else None)
            emb = self.embeddings[i][k] if k is not None else None
            t = time.perf_counter()
            e = ex.entry(rgb, face, self.metadata[i], emb)
            self.timing[f"features:{ex.name}"] += time.perf_counter() - t
            self.timing[f"n_faces:{ex.name}"] += 1
            entries[key] = e
            self._dirty.add(i)
        return e

    def save(self) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for i in sorted(self._dirty):
            path = self._cache_path(i)
            if path is not None:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self._records[i]))
                tmp.replace(path)
        self._dirty.clear()

    # ------------------------------------------------------------------ faces of interest

    def best_face(
        self, i: int, name: str | None, exclude: int | None = None
    ) -> tuple[int | None, float]:
        """The face of image ``i`` that shows ``name``: the one most similar (backend
        embedding) to any face of ``name``'s OTHER real photos; the largest face when
        ``name`` has none. (None, nan) when the image has no face."""
        if not self.faces[i]:
            return None, float("nan")
        others = [
            j
            for j in (self.real_by_name.get(name, []) if name else [])
            if j != i and j != exclude and len(self.embeddings[j])
        ]
        if not others:
            # The largest face, but not one that a co-labelled person's other photos
            # identify as theirs (a couple photo of A and B, with B's other photos in
            # the set, must not give A the face of B).
            taken = set()
            for other in self.rows[i].identities:
                if other != name and any(
                    j != i and len(self.embeddings[j]) for j in self.real_by_name.get(other, [])
                ):
                    k_other, _ = self.best_face(i, other, exclude)
                    taken.add(k_other)
            free = [k for k in range(len(self.faces[i])) if k not in taken] or list(
                range(len(self.faces[i]))
            )
            return max(free, key=lambda k: self.faces[i][k].area), float("nan")
        pool = np.concatenate([self.embeddings[j] for j in others])
        sims = (self.embeddings[i] @ pool.T).max(axis=1)
        return int(np.argmax(sims)), float(sims.max())

    def loo_pair(self, i: int) -> tuple[int | None, list[tuple[int, int]], str | None]:
        """Leave-one-out setting of image ``i`` (the research script's): its face of
        interest, and as references the other real photos of its labelled identity
        (the first identity that has any), each with its own face of interest. A fake
        made from one of those photos (``donor=PATH`` in its notes, as
        scripts/make_edit_set.py writes) never gets that photo as a reference."""
        r = self.rows[i]
        name = next(
            (n for n in r.identities if any(j != i for j in self.real_by_name.get(n, []))), None
        )
        k, _ = self.best_face(i, name or (r.identities[0] if r.identities else None))
        refs = []
        donor = donor_of(r)
        if name:
            for j in self.real_by_name[name]:
                if j == i or self.rows[j].path == donor:
                    continue
                kj, _ = self.best_face(j, name)
                if kj is not None:
                    refs.append((j, kj))
        return k, refs, name

    def loo_features(
        self,
        ex: FeatureExtractor,
        progress: Progress | None = None,
        pseudo_for_missing: bool = False,
        idx: Sequence[int] | None = None,
    ) -> list[dict[str, Any] | None]:
        """Per image: {"features", "k", "n_refs", "name"} in the leave-one-out setting,
        or None for an image without a face (unless ``pseudo_for_missing``) and for
        images not in ``idx`` (default: every image)."""
        out: list[dict[str, Any] | None] = []
        n = len(self.rows)
        wanted = set(range(n)) if idx is None else set(idx)
        for i in range(n):
            k, refs, name = self.loo_pair(i)
            if i not in wanted or (k is None and not pseudo_for_missing):
                out.append(None)
            else:
                up = self.entry(ex, i, k)
                ref_entries = [self.entry(ex, j, kj) for j, kj in refs]
                out.append(
                    {
                        "features": ex.features(up, ref_entries),
                        "k": k,
                        "n_refs": len(refs),
                        "name": name,
                    }
                )
            if progress:
                progress(i + 1, n, self.rows[i].path.name)
        self.save()
        return out

    def timing_per_image(self) -> dict[str, float]:
        n = max(len(self.rows), 1)
        out = {}
        for key in ("detect", "embed"):
            if key in self.timing:
                out[key] = self.timing[key] / n
        for key, v in self.timing.items():
            if key.startswith("features:"):
                cnt = self.timing.get("n_faces:" + key.split(":", 1)[1], 0) or 1
                out[key + " (per face)"] = v / cnt
        return out


def write_split(
    manifest: str | Path, out_dir: str | Path, test_fraction: float = 0.5, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``train.csv`` / ``test.csv`` (absolute paths, same columns) so that no
    person and no source figure of test.csv appears in train.csv: whole leakage groups
    (core.evaluation.grouping) are drawn at random until ``test_fraction`` of the
    images."""
    import csv

    from core.evaluation.grouping import leakage_groups

    manifest = Path(manifest)
    rows = read_manifest(manifest)
    groups = leakage_groups(rows)
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    sizes = {g: int((groups == g).sum()) for g in uniq}
    test: set[str] = set()
    n_test = 0
    for g in uniq:
        if n_test >= test_fraction * len(rows):
            break
        test.add(g)
        n_test += sizes[g]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        recs = list(reader)
    paths = (out_dir / "train.csv", out_dir / "test.csv")
    writers = []
    handles = [p.open("w", newline="", encoding="utf-8") for p in paths]
    try:
        for h in handles:
            w = csv.DictWriter(h, fieldnames=fields)
            w.writeheader()
            writers.append(w)
        for rec, row, g in zip(recs, rows, groups, strict=True):
            rec = dict(rec, path=str(row.path))
            writers[1 if g in test else 0].writerow(rec)
    finally:
        for h in handles:
            h.close()
    return paths
