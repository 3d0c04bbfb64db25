"""Vector storage in Milvus through pymilvus' MilvusClient.

The same code talks to a milvus-lite file (embedded default: one process owns
the file) or to a Milvus server (``http://host:19530``; on this machine
``milvus-lite server``). Two collections per face backend, named after it so
embeddings of different models never mix:

- ``refs_<backend>``: authentic reference faces of protected identities (small:
  FLAT index, exact search);
- ``faces_<backend>``: every face seen in uploads (large: HNSW), searched when a
  new identity is registered (backfill).

Per-identity restriction is done in Python on exact results, never with a
filtered HNSW search (milvus-lite applies filters after the ANN step).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass

import numpy as np
from pymilvus import DataType, MilvusClient

# milvus-lite's in-process server lacks AllocTimestamp, which pymilvus calls while
# waiting for an index build; the call fails harmlessly but grpc logs a traceback.
logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
log = logging.getLogger(__name__)

# Milvus caps top-k per search at 16384.
MAX_LIMIT = 16384
FIRST_LIMIT = 256


def _reset_on_error(fn):
    """After a failed call, drop the client and the loaded-collection cache, so the
    retry (Celery retries transient errors) reconnects and reloads: a restarted Milvus
    server has a fresh gRPC endpoint and its collections are not loaded yet."""

    @functools.wraps(fn)
    def wrapper(self: VectorStore, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except Exception:
            self._reset()
            raise

    return wrapper


@dataclass(frozen=True)
class Hit:
    id: int  # reference id or face id
    owner: int  # identity id or upload id
    score: float  # cosine similarity (inner product of unit vectors)


class VectorStore:
    def __init__(self, uri: str, token: str | None = None) -> None:
        self.uri = uri
        self._client: MilvusClient | None = None
        self._lock = threading.RLock()
        self._ready: set[str] = set()
        self._token = token

    @property
    def client(self) -> MilvusClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    kwargs = {"token": self._token} if self._token else {}
                    self._client = MilvusClient(uri=self.uri, **kwargs)
        return self._client

    def _reset(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._ready.clear()
        if client is not None:
            try:
                client.close()
            except Exception:  # the connection is what failed; nothing to save
                log.debug("closing a failed Milvus client", exc_info=True)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._ready.clear()

    # -- collections ---------------------------------------------------------------
    @staticmethod
    def refs_name(backend: str) -> str:
        return f"refs_{backend}"

    @staticmethod
    def faces_name(backend: str) -> str:
        return f"faces_{backend}"

    def _ensure(self, name: str, dim: int, index_type: str) -> None:
        if name in self._ready:
            return
        with self._lock:
            if name in self._ready:
                return
            c = self.client
            if not c.has_collection(name):
                schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("id", DataType.INT64, is_primary=True)
                schema.add_field("owner", DataType.INT64)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
                index = c.prepare_index_params()
                params = {"M": 16, "efConstruction": 200} if index_type == "HNSW" else {}
                index.add_index(
                    field_name="vector", index_type=index_type, metric_type="IP", params=params
                )
                c.create_collection(name, schema=schema, index_params=index)
            c.load_collection(name)
            self._ready.add(name)

    def _loaded(self, name: str) -> bool:
        """Load an existing collection before a query or delete (a process that did not
        create it finds it released: Milvus refuses to query it); False if absent."""
        if name in self._ready:
            return True
        with self._lock:
            if not self.client.has_collection(name):
                return False
            self.client.load_collection(name)
            self._ready.add(name)
            return True

    def _ref_collections(self) -> list[str]:
        return [n for n in self.client.list_collections() if n.startswith("refs_")]

    # -- writes ----------------------------------------------------------------------
    def _upsert(self, name: str, ids: list[int], owners: list[int], vecs: np.ndarray) -> None:
        if not ids:
            return
        rows = [
            {"id": int(i), "owner": int(o), "vector": v.astype(np.float32).tolist()}
            for i, o, v in zip(ids, owners, vecs, strict=True)
        ]
        # Upsert by primary key: a redelivered task rewrites the same rows.
        self.client.upsert(name, rows)

    @_reset_on_error
    def add_references(
        self, backend: str, ref_ids: list[int], identity_ids: list[int], vecs: np.ndarray
    ) -> None:
        self._ensure(self.refs_name(backend), vecs.shape[1], "FLAT")
        self._upsert(self.refs_name(backend), ref_ids, identity_ids, vecs)

    @_reset_on_error
    def add_faces(
        self, backend: str, face_ids: list[int], upload_ids: list[int], vecs: np.ndarray
    ) -> None:
        self._ensure(self.faces_name(backend), vecs.shape[1], "HNSW")
        self._upsert(self.faces_name(backend), face_ids, upload_ids, vecs)

    @_reset_on_error
    def delete_identity(self, identity_id: int, ref_ids: list[int] = ()) -> int:
        """Remove every reference vector of an identity (by owner, and by the reference
        ids the database knows), in all backends' collections; raise if any is left."""
        removed = len(self.reference_ids(identity_id))
        for name in self._ref_collections():
            if self._loaded(name):
                self.client.delete(name, filter=f"owner == {int(identity_id)}")
                if ref_ids:
                    self.client.delete(name, ids=[int(i) for i in ref_ids])
        left = self.reference_ids(identity_id)
        if left:
            raise RuntimeError(f"{len(left)} reference vector(s) of {identity_id} not deleted")
        return removed

    @_reset_on_error
    def delete_faces(self, backend: str, face_ids: list[int]) -> None:
        name = self.faces_name(backend)
        if face_ids and self._loaded(name):
            self.client.delete(name, ids=[int(i) for i in face_ids])

    # -- reads -----------------------------------------------------------------------
    def _search(
        self, name: str, vecs: np.ndarray, limit: int, min_score: float | None
    ) -> list[list[Hit]]:
        if len(vecs) == 0 or not self.client.has_collection(name):
            return [[] for _ in range(len(vecs))]
        self._ensure(name, vecs.shape[1], "FLAT")
        params: dict = {"metric_type": "IP", "params": {}}
        if name.startswith("faces_"):
            params["params"]["ef"] = max(64, min(limit, MAX_LIMIT))
        res = self.client.search(
            name,
            data=[v.astype(np.float32).tolist() for v in vecs],
            limit=min(limit, MAX_LIMIT),
            output_fields=["owner"],
            search_params=params,
        )
        out = []
        for hits in res:
            row = [Hit(int(h["id"]), int(h["entity"]["owner"]), float(h["distance"])) for h in hits]
            if min_score is not None:
                row = [h for h in row if h.score >= min_score]
            out.append(row)
        return out

    @_reset_on_error
    def search_references(self, backend: str, vecs: np.ndarray, limit: int = 64) -> list[list[Hit]]:
        return self._search(self.refs_name(backend), vecs, limit, None)

    @_reset_on_error
    def search_faces(
        self, backend: str, vecs: np.ndarray, min_score: float, limit: int = MAX_LIMIT
    ) -> list[list[Hit]]:
        """Every stored face scoring >= ``min_score`` (up to ``limit``) per query vector.

        Asking Milvus for 16k candidates costs ~0.6 s per query at 100k faces, almost
        all of it producing candidates, so each query starts small and widens only while
        its answer is full (hits come sorted: a short answer holds them all)."""
        name = self.faces_name(backend)
        out = []
        for v in vecs:
            k = min(FIRST_LIMIT, limit)
            while True:
                hits = self._search(name, v[None, :], k, min_score)[0]
                if len(hits) < k or k >= limit:
                    break
                k = min(limit, k * 4)
            out.append(hits)
        return out

    @_reset_on_error
    def count(self, name: str) -> int:
        if not self._loaded(name):
            return 0
        res = self.client.query(name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    @_reset_on_error
    def reference_ids(self, identity_id: int, backend: str | None = None) -> list[int]:
        """Ids of the identity's reference vectors (in one backend's collection, or all)."""
        ids: list[int] = []
        names = [self.refs_name(backend)] if backend else self._ref_collections()
        for name in names:
            if self._loaded(name):
                rows = self.client.query(
                    name, filter=f"owner == {int(identity_id)}", output_fields=["id"]
                )
                ids += [int(r["id"]) for r in rows]
        return ids
