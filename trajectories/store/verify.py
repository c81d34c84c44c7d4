"""`migm verify` and `migm inspect`: check a dataset's shards, and describe what it holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from migm.trajectories.checks import output_file, writable_dir
from migm.trajectories.errors import MigmError
from migm.trajectories.store.content import rows_problem
from migm.trajectories.store.dataset import TrajectoryDataset, open_dataset


def shard_problem(ds: TrajectoryDataset, k: int, block: int = 64) -> str | None:
    """Why shard k is bad, or None: its checksum, then every row read back and decoded, with the
    ids each row must carry (sample k·S + i // branches, branch i % branches) and the content the
    manifest allows (`store.content.rows_problem`: ranges, finite features)."""
    try:
        problem = ds.checksum_problem(k)
        if problem is not None:
            return problem
        reader = ds.open_shard(k)
        plan, rows = ds.manifest, ds.shards[k].rows
        first = plan.shard_samples(k).start
        for start in range(0, rows, block):
            data = reader.read(start, min(start + block, rows))
            i = np.arange(start, start + len(data["tokens"]))
            for name, (shape, dtype) in ds.specs.items():
                if data[name].shape[1:] != shape or data[name].dtype != dtype:
                    return (
                        f"field {name} is {data[name].dtype}{list(data[name].shape[1:])}, expected {dtype}{list(shape)}"
                    )
            ds.codec.decode({f: data[f] for f in ds.codec.stored_fields()})
            content = rows_problem(data, plan, start)
            if content is not None:
                return content
            if not (
                np.array_equal(data["sample_id"], first + i // plan.branches)
                and np.array_equal(data["branch"], i % plan.branches)
            ):
                return (
                    f"rows {start}-{start + len(i) - 1} do not hold the samples and branches the manifest places there"
                )
    except MigmError as e:
        return str(e)
    return None


def verify_dataset(root: str | Path, storage_options: dict | None = None) -> dict:
    """Manifest, checksums, and every row of every shard. Returns a report; `ok` is False if any is bad.
    `root`: a folder or an fsspec URL (the shards are read straight from the store)."""
    ds = open_dataset(root, storage_options=storage_options)
    report = []
    for k, shard in enumerate(ds.shards):
        problem = shard_problem(ds, k)
        report.append({"name": shard.name, "rows": shard.rows, "ok": problem is None, "problem": problem})
    return {"dataset": str(root), "ok": all(r["ok"] for r in report), "shards": report}


def inspect_dataset(
    root: str | Path, plot: str | Path | None = None, sample_rows: int = 64, storage_options: dict | None = None
) -> dict:
    """Rows, dims, sizes, codec error bound and the smoothness curve (mean cos(f_s, f_{s+1}) per step).
    The plot is written only where `plot` says (its folder created); shards read are checked first."""
    if plot is not None:
        plot = output_file(plot, (".png",), "--plot")
    ds = open_dataset(root, storage_options=storage_options)
    manifest, dims = ds.manifest, ds.dims
    size = sum(ds.size(k) for k in range(len(ds.shards)))
    raw = dims.N * dims.T * dims.D * 2
    rows = np.linspace(0, len(ds) - 1, min(sample_rows, len(ds))).round().astype(int)
    picked = [ds[int(r)] for r in rows]
    feats = np.stack([p["features"].astype(np.float32) for p in picked])  # [n, N, T, D]
    # text rows are right-padded: only each row's own positions count
    lengths = np.array([int(p["length"]) if "length" in p else dims.T for p in picked])
    real = (np.arange(dims.T)[None] < lengths[:, None])[:, None, :]  # [n, 1, T]
    a, b = feats[:, :-1], feats[:, 1:]
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-8)
    smooth = ((cos * real).sum(axis=(0, 2)) / (real.sum() or 1)).tolist()
    info = {
        "dataset": str(root),
        "format": manifest.format,
        "codec": ds.codec.spec,
        "base": manifest.base.name,
        "rows": len(ds),
        "samples": manifest.num_samples,
        "steps": dims.N,
        "dims": {"L": dims.L, "C": dims.C, "D": dims.D, "V": dims.V},
        "bytes": size,
        "bytes_per_trajectory": size / max(1, len(ds)),
        "ratio_to_raw_float16": size / max(1, len(ds)) / raw,
        "smoothness": smooth,
    }
    if ds.codec.lossy:
        k = ds.locate(int(rows[0]))[0]
        scale = ds.reader(k).read(0, min(8, ds.shards[k].rows))["features_scale"].astype(np.float32)
        info["codec_max_abs_error_bound"] = float(scale.max() / 2)
    if plot is not None:
        writable_dir(plot.parent, "--plot folder")  # checked before the work, created only now
        info["plot"] = str(save_smoothness_plot(smooth, plot, f"{manifest.base.name}, N={dims.N}"))
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
    try:
        fig.savefig(path)
    except OSError as e:
        raise MigmError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path
