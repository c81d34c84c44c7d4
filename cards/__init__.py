"""Dataset and model cards, rendered from the Markdown templates in `cards/templates/`."""

from __future__ import annotations

from pathlib import Path

import yaml  # PyYAML, which `datasets` depends on

TEMPLATES = Path(__file__).parent / "templates"

FIELD_MEANING = {
    "features": "last-layer feature at every step, float16",
    "features_q": "feature codes (quantised, signed), decoded as `features_q * features_scale`",
    "features_scale": "per-token scale of `features_q`",
    "tokens": "final token grid",
    "order": "step at which each position was unmasked",
    "cond": "class id",
    "branch": "0 conditional, 1 unconditional (CFG)",
    "sample_id": "sample index; both branches of a sample share it",
    "seed": "the sample's own seed",
}


def render_dataset_card(manifest: dict) -> str:
    from trajectories.store.codecs import codec_from_dict
    from trajectories.store.parquet_writer import hf_features
    from trajectories.store.schema import Dims, field_specs

    dims, codec = Dims(**manifest["dims"]), codec_from_dict(manifest["codec"])
    specs = field_specs(dims, codec)
    meta: dict = {"license": "other", "tags": ["migm", "masked-image-generation", "feature-trajectories"],
                  "pretty_name": f"{manifest['base']['name']} trajectories"}  # fmt: skip
    parquet_use = ""
    if manifest["format"] == "parquet":
        meta["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
        meta["dataset_info"] = {"features": hf_features(dims, codec)._to_yaml_list()}
        parquet_use = (
            '\nWith 🤗 datasets (float16 kept as `Array3D` when formatted with `dtype=None`):\n\n```python\n'
            'from datasets import load_dataset\nds = load_dataset("PATH_OR_REPO", split="train")\n'
            'ds = ds.with_format("numpy", dtype=None)\n```\n'
        )
    size = sum(s.get("bytes", 0) for s in manifest["shards"])
    rows = manifest.get("rows") or 1
    raw = dims.N * dims.T * dims.D * 2
    schema_rows = "\n".join(
        f"| `{name}` | {dtype.name} | {list(shape) if shape else 'scalar'} | {FIELD_MEANING[name]} |"
        for name, (shape, dtype) in specs.items()
    )
    s = manifest["sampler"]
    return (TEMPLATES / "dataset.md").read_text().format(
        yaml=yaml.safe_dump(meta, sort_keys=False).rstrip(),
        title=f"{manifest['base']['name']}-n{dims.N}",
        base_name=manifest["base"]["name"],
        fingerprint=manifest["base"]["fingerprint"],
        created_by=manifest.get("created_by", "migm"),
        num_samples=manifest["num_samples"],
        rows=manifest.get("rows", 0),
        branches=manifest["branches"],
        classes=", ".join(map(str, manifest["classes"])),
        sampler=f"N={s['steps']}, w={s['guidance']}, r_temp={s['r_temp']}, sm_temp={s['sm_temp']}",
        seed=manifest["seed"],
        format=manifest["format"],
        shards=len(manifest["shards"]),
        codec=codec.spec,
        size_mb=size / 1e6,
        bytes_per_row=size // rows,
        ratio=size / rows / raw,
        schema_rows=schema_rows,
        parquet_use=parquet_use,
        N=dims.N, L=dims.L, C=dims.C, D=dims.D, V=dims.V,
    )  # fmt: skip


def render_model_card(config: dict, path: str) -> str:
    if "origin" in config:
        return render_imported_card(config, path)
    m, cost, t = config["metrics"]["overall"], config["cost"], config["training"]
    per_step = config["metrics"]["per_step"]
    meta = {"library_name": "migm", "tags": ["migm", "feature-shortcut", config["arch"], config["base"]["name"]],
            "license": "other"}  # fmt: skip
    N = config["sampler"]["steps"]
    return (TEMPLATES / "model.md").read_text().format(
        yaml=yaml.safe_dump(meta, sort_keys=False).rstrip(),
        name=Path(path).name, path=path, arch=config["arch"],
        arch_config=", ".join(f"{k}={v}" for k, v in config["arch_config"].items()),
        version=config["version"], base_name=config["base"]["name"], fingerprint=config["base"]["fingerprint"],
        dataset_fingerprint=config["dataset"]["fingerprint"][:16], samples=config["dataset"]["num_samples"],
        codec=config["dataset"]["codec"], N=N, budget_hint=max(1, N // 3),
        parameters=cost["parameters"], relative_cost=cost["relative_cost"],
        shortcut_mflops=cost["shortcut_flops"] / 1e6, base_mflops=cost["base_flops"] / 1e6,
        steps=t["steps"], batch_size=t["batch_size"], lr=t["lr"], ema=t["ema"], loss=t["loss"],
        processes=t["processes"], minutes=t["seconds"] / 60,
        cos=m["cos"], mse=m["mse"], ratio=m["mse_ratio_to_cache"], agree=m["agree"],
        cache_cos=m["cache_cos"], cache_mse=m["cache_mse"], cache_agree=m["cache_agree"],
        step_header=" | ".join(str(r["step"]) for r in per_step), step_rule="---|" * len(per_step),
        step_cos=" | ".join(f"{r['cos']:.4f}" for r in per_step),
        step_cache=" | ".join(f"{r['cache_cos']:.4f}" for r in per_step),
    )  # fmt: skip


def render_imported_card(config: dict, path: str) -> str:
    """Card of a published shortcut wrapped by `migm zoo import`: origin and cost, no training figures."""
    cost, origin = config["cost"], config["origin"]
    meta = {"library_name": "migm", "tags": ["migm", "feature-shortcut", config["arch"], config["base"]["name"]],
            "license": "other"}  # fmt: skip
    return (TEMPLATES / "imported.md").read_text().format(
        yaml=yaml.safe_dump(meta, sort_keys=False).rstrip(),
        name=Path(path).name, path=path, arch=config["arch"],
        arch_config=", ".join(f"{k}={v}" for k, v in config["arch_config"].items()),
        version=config["version"], base_name=config["base"]["name"], fingerprint=config["base"]["fingerprint"],
        published=origin["published"], sha256=origin["sha256"], N=config["sampler"]["steps"],
        parameters=cost["parameters"], relative_cost=cost["relative_cost"],
        shortcut_mflops=cost["shortcut_flops"] / 1e6, base_mflops=cost["base_flops"] / 1e6,
    )  # fmt: skip
