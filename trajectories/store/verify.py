"""`migm verify` and `migm inspect`: check a dataset's shards, and describe what it holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajectories.errors import MigmError
from trajectories.store.dataset import open_dataset
from trajectories.store.schema import path_size


def verify_dataset(root: str | Path) -> dict:
    """Schema, shapes and checksums of every shard. Returns a report; `ok` is False if any is bad."""
    ds = open_dataset(root)
    report = []
    for k, shard in enumerate(ds.shards):
        problem = ds.checksum_problem(k)
        if problem is None:
            try:
                reader = ds.reader(k)
                first = reader.read(0, 1)
                for name, (shape, dtype) in ds.specs.items():
                    if first[name].shape[1:] != shape or first[name].dtype != dtype:
                        problem = f"field {name} is {first[name].dtype}{list(first[name].shape[1:])}, expected {dtype}{list(shape)}"
                        break
            except MigmError as e:
                problem = str(e)
        report.append({"name": shard["name"], "rows": shard["rows"], "ok": problem is None, "problem": problem})
    return {"dataset": str(root), "ok": all(r["ok"] for r in report), "shards": report}


def inspect_dataset(root: str | Path, plot: str | Path | None = None, sample_rows: int = 64) -> dict:
    """Rows, dims, sizes, codec error bound and the smoothness curve (mean cos(f_s, f_{s+1}) per step)."""
    ds = open_dataset(root)
    manifest, dims = ds.manifest, ds.dims
    size = sum(path_size(ds.root / s["name"]) for s in ds.shards)
    raw = dims.N * dims.T * dims.D * 2
    rows = np.linspace(0, len(ds) - 1, min(sample_rows, len(ds))).round().astype(int)
    feats = np.stack([ds[int(r)]["features"].astype(np.float32) for r in rows])  # [n, N, T, D]
    a, b = feats[:, :-1], feats[:, 1:]
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-8)
    smooth = cos.mean(axis=(0, 2)).tolist()
    info = {
        "dataset": str(root),
        "format": manifest["format"],
        "codec": ds.codec.spec,
        "base": manifest["base"]["name"],
        "rows": len(ds),
        "samples": manifest["num_samples"],
        "steps": dims.N,
        "dims": {"L": dims.L, "C": dims.C, "D": dims.D, "V": dims.V},
        "bytes": size,
        "bytes_per_trajectory": size / max(1, len(ds)),
        "ratio_to_raw_float16": size / max(1, len(ds)) / raw,
        "smoothness": smooth,
    }
    if ds.codec.lossy:
        k = ds.locate(int(rows[0]))[0]
        scale = ds.reader(k).read(0, min(8, ds.shards[k]["rows"]))["features_scale"].astype(np.float32)
        info["codec_max_abs_error_bound"] = float(scale.max() / 2)
    if plot is not None:
        info["plot"] = str(save_smoothness_plot(smooth, Path(plot), f"{manifest['base']['name']}, N={dims.N}"))
    return info


def save_smoothness_plot(curve: list[float], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot(range(len(curve)), curve, marker="o")
    ax.set_xlabel("step s")
    ax.set_ylabel(r"mean cos($f_s$, $f_{s+1}$)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
