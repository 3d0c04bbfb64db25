"""VectorStore on a milvus-lite file: upsert by id, exact reference search, threshold
search of the face index that widens past its first page, deletion."""

from __future__ import annotations

import numpy as np

from core.storage import vectors as V
from core.storage.vectors import VectorStore


def _unit(rng, n, d=64):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_store_search_delete(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    store = VectorStore(str(tmp_path / "v.db"))
    refs = _unit(rng, 6)
    store.add_references("t", [1, 2, 3, 4, 5, 6], [10, 10, 20, 20, 30, 30], refs)
    store.add_references("t", [1], [10], refs[:1])  # upsert: no duplicate
    assert store.count("refs_t") == 6
    hits = store.search_references("t", refs[2:3], limit=3)[0]
    assert hits[0].id == 3 and hits[0].owner == 20 and abs(hits[0].score - 1) < 1e-5

    # 40 near-copies of one face + 200 others: a threshold search must return all 40
    # even when the first page is smaller than that.
    base = _unit(rng, 1)[0]
    near = base + 0.05 * _unit(rng, 40)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    others = _unit(rng, 200)
    store.add_faces("t", list(range(100, 140)), [1] * 40, near)
    store.add_faces("t", list(range(1000, 1200)), [2] * 200, others)
    monkeypatch.setattr(V, "FIRST_LIMIT", 8)
    found = store.search_faces("t", base[None, :], min_score=0.9)[0]
    assert {h.id for h in found} == set(range(100, 140))
    assert all(h.score >= 0.9 for h in found)

    assert sorted(store.reference_ids(20)) == [3, 4]
    assert store.delete_identity(20) == 2
    assert store.count("refs_t") == 4
    store.delete_faces("t", list(range(100, 110)))
    assert store.count("faces_t") == 230
    store.close()
    reopened = VectorStore(str(tmp_path / "v.db"))
    assert reopened.count("faces_t") == 230  # persisted in the file
    reopened.close()
