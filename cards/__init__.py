"""Dataset and model cards, rendered from the Markdown templates in `cards/templates/`."""

from __future__ import annotations

from pathlib import Path

import yaml  # PyYAML, which `datasets` depends on

TEMPLATES = Path(__file__).parent / "templates"

FIELD_MEANING = {
    "features": "last-layer feature at every step, float16",
    "features_q": "feature codes (quantised, signed), decoded as `features_q * features_scale`",
    "features_delta": "temporal feature codes (zigzag-mapped, unsigned): see Decoding",
    "features_scale": "per-token scale of the codes",
    "tokens": "final token grid",
    "order": "step at which each position was unmasked",
    "cond": "class id (text bases: index of the prompt in the dataset card / `dataset.json`)",
    "length": "positions of this row's sequence (features are right-padded with zeros to C + L)",
    "cells": "feature position of each image cell in this row's sequence",
    "prompt_ids": "this branch's prompt token ids (markup included), right-padded with -1",
    "branch": "0 conditional, 1 unconditional (CFG)",
    "sample_id": "sample index; both branches of a sample share it",
    "seed": "the sample's own seed",
}


def render_dataset_card(card: dict) -> str:
    """The dataset card from plain fields (built by the store: `trajectories/store/card.py`): name,
    fingerprint, created_by, num_samples, rows, branches, classes, sampler, seed, format, shards,
    codec, decoding (how a plain reader decodes the features, Markdown), bytes, raw_bytes_per_row,
    fields [(name, dtype, shape)], hub_features (Parquet) and dims."""
    meta: dict = {
        "license": "other",
        "tags": ["migm", "masked-image-generation", "feature-trajectories"],
        "pretty_name": f"{card['name']} trajectories",
    }
    parquet_use = ""
    if card["hub_features"] is not None:
        meta["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
        meta["dataset_info"] = {"features": card["hub_features"]}
        parquet_use = (
            "\nWith 🤗 datasets (float16 kept as `Array3D` when formatted with `dtype=None`):\n\n```python\n"
            'from datasets import load_dataset\nds = load_dataset("PATH_OR_REPO", split="train")\n'
            'ds = ds.with_format("numpy", dtype=None)\n```\n'
        )
    rows = card["rows"] or 1
    schema_rows = "\n".join(
        f"| `{name}` | {dtype} | {shape if shape else 'scalar'} | {FIELD_MEANING[name]} |"
        for name, dtype, shape in card["fields"]
    )
    d = card["dims"]
    return (
        (TEMPLATES / "dataset.md")
        .read_text()
        .format(
            yaml=yaml.safe_dump(meta, sort_keys=False).rstrip(),
            title=f"{card['name']}-n{d['N']}",
            base_name=card["name"],
            fingerprint=card["fingerprint"],
            created_by=card["created_by"],
            num_samples=card["num_samples"],
            rows=card["rows"],
            branches=card["branches"],
            classes=", ".join(map(str, card["classes"])),
            sampler=card["sampler"],
            seed=card["seed"],
            format=card["format"],
            shards=card["shards"],
            codec=card["codec"],
            decoding=card["decoding"],
            size_mb=card["bytes"] / 1e6,
            bytes_per_row=card["bytes"] // rows,
            ratio=card["bytes"] / rows / card["raw_bytes_per_row"],
            schema_rows=schema_rows,
            parquet_use=parquet_use,
            **d,
        )
    )


def figure(value: float | None, spec: str) -> str:
    """A measured figure for a card or table; None (not measured: e.g. too few held-out samples) is n/a."""
    return "n/a" if value is None else format(value, spec)


def shortcut_fields(config: dict, path: str) -> dict:
    """What every model card shows: the YAML header, the arch, the base and the counted cost."""
    meta = {
        "library_name": "migm",
        "tags": ["migm", "feature-shortcut", config["arch"], config["base"]["name"]],
        "license": "other",
    }
    cost = config["cost"]
    return {
        "yaml": yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "name": Path(path).name,
        "path": path,
        "arch": config["arch"],
        "arch_config": ", ".join(f"{k}={v}" for k, v in config["arch_config"].items()),
        "version": config["version"],
        "base_name": config["base"]["name"],
        "fingerprint": config["base"]["fingerprint"],
        "N": config["sampler"]["steps"],
        "parameters": cost["parameters"],
        "relative_cost": cost["relative_cost"],
        "shortcut_mflops": cost["shortcut_flops"] / 1e6,
        "base_mflops": cost["base_flops"] / 1e6,
    }


def render_model_card(config: dict, path: str) -> str:
    if "origin" in config:
        return render_imported_card(config, path)
    m, t = config["metrics"]["overall"], config["training"]
    per_step = config["metrics"]["per_step"]
    fields = shortcut_fields(config, path)
    return (
        (TEMPLATES / "model.md")
        .read_text()
        .format(
            **fields,
            trained_on=trained_on(config["dataset"], fields["N"]),
            budget_hint=max(1, fields["N"] // 3),
            steps=t["steps"],
            batch_size=t["batch_size"],
            lr=t["lr"],
            ema=t["ema"],
            loss=t["loss"],
            processes=t["processes"],
            minutes=t["seconds"] / 60,
            cos=figure(m["cos"], ".4f"),
            mse=figure(m["mse"], ".4g"),
            ratio=figure(m["mse_ratio_to_cache"], ".3f"),
            agree=figure(m["agree"], ".4f"),
            cache_cos=figure(m["cache_cos"], ".4f"),
            cache_mse=figure(m["cache_mse"], ".4g"),
            cache_agree=figure(m["cache_agree"], ".4f"),
            # one row per step: a table that fits any width for any N (a row per step, not a column)
            step_rows="\n".join(
                f"| {r['step']} | {figure(r['cos'], '.4f')} | {figure(r['cache_cos'], '.4f')} |" for r in per_step
            ),
        )
    )


def trained_on(dataset: dict, N: int) -> str:
    """The model card's "trained on": the dataset, or the live rollouts (seed and sample ids)."""
    live = dataset.get("live")
    if live is None:
        return (
            f"dataset `{dataset['fingerprint'][:16]}` ({dataset['num_samples']} samples, N = {N}, "
            f"codec `{dataset['codec']}`)"
        )
    (a, b), (va, vb) = live["training_samples"], live["validation_samples"]
    text = (
        f"live rollouts (no dataset), seed {live['seed']}, N = {N}: samples {a}–{b - 1} ({b - a}); "
        f"validated on held-out samples {va}–{vb - 1}"
    )
    policy = live.get("on_policy")
    if policy is not None:
        budgets = ", ".join(f"N{N}B{B}" for B in policy["budgets"])
        text += (
            f"; on-policy (DAgger): {policy['fraction']:.0%} of each batch from {policy['rollout_batches']} "
            f"rollout batches with the shortcut in the loop at {budgets}, from step {policy['start']} "
            f"(ramp {policy['ramp']} steps), the base's features on the shortcut's states as targets"
        )
    return text


def render_imported_card(config: dict, path: str) -> str:
    """Card of a published shortcut wrapped by `migm zoo import`: origin and cost, no training figures."""
    origin = config["origin"]
    return (
        (TEMPLATES / "imported.md")
        .read_text()
        .format(**shortcut_fields(config, path), published=origin["published"], sha256=origin["sha256"])
    )
