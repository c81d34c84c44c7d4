"""What a shard's rows may hold: the content check that follows the checksum.

A checksum only says the bytes are the ones the manifest recorded; a re-hashed hostile shard, a
buggy third-party writer or a dataset pulled from a bucket can record any bytes. Before a shard is
used (once per open dataset, like its checksum) and by `migm verify`, every row is checked against
the manifest: token ids in [0, V), unmasking steps in [0, N), branches in range, its condition one of the plan's classes (text: prompt indices), finite features
(lossless), codes in the codec's range and finite non-negative scales (quant, delta), and for text
rows a length in [1, T], cells inside it and prompt ids ≥ −1. A problem names the shard, row and field.
"""

from __future__ import annotations

import numpy as np

from migm.trajectories.store.manifest import Plan


def _first_bad(ok: np.ndarray) -> int | None:
    """Index of the first row (axis 0) where `ok` is False anywhere, or None."""
    rows = ok.reshape(len(ok), -1).all(1) if ok.ndim > 1 else ok
    bad = np.flatnonzero(~rows)
    return int(bad[0]) if len(bad) else None


def _code_checks(plan: Plan) -> dict:
    """field -> (check of the stored values, what they must be), for the features as the codec stores them."""
    codec = plan.codec
    finite = (lambda a: np.isfinite(a), "finite numbers")
    if not codec.lossy:
        return {"features": finite}
    scale = (lambda a: np.isfinite(a) & (a >= 0), "finite, non-negative scales")
    if codec.name == "quant":
        q = int(codec.levels)
        return {
            "features_q": (lambda a: np.abs(a.astype(np.int16)) <= q, f"codes in [-{q}, {q}]"),
            "features_scale": scale,
        }
    # delta: zigzag-mapped codes of [-127, 127] are 0 … 254
    return {"features_delta": (lambda a: a <= 254, "codes in [0, 254]"), "features_scale": scale}


def _field_checks(plan: Plan) -> dict:
    """field -> (check of its values, what they must be). Where each sample and branch sits is
    `verify`'s own check (`store.verify.shard_problem`)."""
    dims, branches = plan.dims, plan.branches
    classes = np.asarray(plan.classes)
    checks = {
        "tokens": (lambda a: (a >= 0) & (a < dims.V), f"image token ids in [0, V = {dims.V})"),
        "order": (lambda a: (a >= 0) & (a < dims.N), f"unmasking steps in [0, N = {dims.N})"),
        "branch": (lambda a: a < branches, f"branches in [0, {branches})"),
        "cond": (
            lambda a: np.isin(a, classes),
            "one of the dataset's classes" if plan.text is None else "a prompt index",
        ),
    }
    if dims.P:
        checks["length"] = (lambda a: (a >= 1) & (a <= dims.T), f"a row length in [1, T = {dims.T}]")
        checks["prompt_ids"] = (lambda a: a >= -1, "prompt ids (or -1 padding)")
    return {**checks, **_code_checks(plan)}


def rows_problem(data: dict[str, np.ndarray], plan: Plan, start: int) -> str | None:
    """Why rows [start, start + n) of a shard (raw stored arrays) are not what the manifest allows,
    or None. Names the first bad row (within the shard) and field."""
    for field, (check, want) in _field_checks(plan).items():
        bad = _first_bad(check(data[field]))
        if bad is not None:
            return f"row {start + bad}: field {field} holds values outside {want}"
    if plan.dims.P:  # each image cell lies inside its row's own length
        bad = _first_bad((data["cells"] >= 0) & (data["cells"] < data["length"][:, None]))
        if bad is not None:
            return f"row {start + bad}: field cells holds positions outside the row's length"
    return None


def shard_content_problem(reader, plan: Plan, rows: int, block: int = 64) -> str | None:
    """Every row of a shard (an open reader of `rows` rows) checked by `rows_problem`, a block at a time."""
    for start in range(0, rows, block):
        problem = rows_problem(reader.read(start, min(start + block, rows)), plan, start)
        if problem is not None:
            return problem
    return None
