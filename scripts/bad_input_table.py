"""Print the bad-input table (kind -> status, reason, faces) as markdown.

Builds the corpus of tests/badcorpus.py in a temporary folder, scans every case with
the embedded runner on fresh Services (the corpus settings, the astronaut registered
as the protected identity), and prints one row per case. For the closing note and the
README:

    .venv/bin/python scripts/bad_input_table.py > table.md

Exits 1 if a case raised out of ``scan`` or ended ``failed`` (the table still prints).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from core.pipeline.identities import register_identity  # noqa: E402
from core.pipeline.sources.scan import scan  # noqa: E402
from core.services import Services  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.storage.models import Upload  # noqa: E402
from tests.badcorpus import (  # noqa: E402
    SKIPPED,
    Case,
    build_corpus,
    corpus_settings,
    reference_photo,
)

REASON_MAX = 70


def _cell(text: str) -> str:
    """Markdown-safe table cell: one line, pipes escaped, shortened."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


def _row(svc: Services, case: Case, tmp: str) -> tuple[list[str], bool]:
    t0 = time.monotonic()
    try:
        summary = scan(svc, [case.path])
    except Exception as exc:  # the finding is the row, not a crash of this script
        return [case.kind, "**exception**", _cell(f"{type(exc).__name__}: {exc}"), "-", ""], False
    seconds = f"{time.monotonic() - t0:.2f}"
    if not summary.upload_ids:
        why = case.note or "not taken by the folder walk"
        return [case.kind, "not taken", _cell(why), "-", seconds], True
    with svc.db.session() as s:
        ups = list(s.scalars(select(Upload).where(Upload.id.in_(summary.upload_ids))))
    statuses = ", ".join(sorted({u.status for u in ups}))
    reason = "; ".join(sorted({(u.reason or "").replace(tmp, "…") for u in ups} - {""}))
    if summary.duplicates:
        reason = "; ".join(
            filter(None, [f"{summary.submitted} files -> {len(ups)} upload", reason])
        )
    faces = ", ".join(str(u.n_faces) if u.n_faces is not None else "-" for u in ups)
    ok = all(u.status != "failed" for u in ups)
    return [case.kind, statuses, _cell(reason or "-"), faces, seconds], ok


def main() -> int:
    logging.basicConfig(level=logging.CRITICAL)  # failures show in the table instead
    warnings.simplefilter("ignore")  # Pillow's bomb / corrupt-EXIF warnings are expected
    with tempfile.TemporaryDirectory(prefix="idwatch-badcorpus-") as tmp:
        d = Path(tmp)
        cases = build_corpus(d)
        svc = Services(Settings(data_dir=d / "data", notifier="memory", **corpus_settings()))
        try:
            register_identity(svc, "Eileen Collins", [reference_photo(d)])
            rows, all_ok = [], True
            for case in cases:
                row, ok = _row(svc, case, tmp)
                rows.append(row)
                all_ok &= ok
        finally:
            svc.close()
    settings = ", ".join(f"{k}={v}" for k, v in corpus_settings().items())
    taken = sum(c.expect_status != SKIPPED for c in cases)
    print(f"Bad-input corpus: {len(cases)} kinds, {taken} of them end as uploads; {settings}\n")
    print("| kind | status | reason | faces | s |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
