"""Parameters shared by the API's routes and the review pages: ids and paging, each
bounded to what its column can hold."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

# Ids are Integer columns (32-bit on PostgreSQL). A larger number names no row: it is
# refused here (422) instead of reaching the database driver, which overflows on it
# (a 500 and a logged traceback on every such request).
ROW_ID_MAX = 2**31 - 1

RowId = Annotated[int, Path(ge=1, le=ROW_ID_MAX, description="A row id (1 to 2^31-1).")]
OptionalRowId = Annotated[
    int | None, Query(ge=1, le=ROW_ID_MAX, description="A row id (1 to 2^31-1).")
]
Offset = Annotated[int, Query(ge=0, le=ROW_ID_MAX, description="Rows to skip.")]
