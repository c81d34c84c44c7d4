"""The dataset card's fields, built from the manifest; `cards` renders them (and knows nothing of
the store)."""

from __future__ import annotations

from migm.trajectories.store.manifest import Manifest
from migm.trajectories.store.parquet_writer import hf_features
from migm.trajectories.store.schema import field_specs


def dataset_card(manifest: Manifest) -> str:
    from migm.cards import render_dataset_card

    dims, codec, s = manifest.dims, manifest.codec, manifest.sampler
    parquet = manifest.format == "parquet"
    return render_dataset_card(
        {
            "name": manifest.base.name,
            "fingerprint": manifest.base.fingerprint,
            "created_by": manifest.created_by,
            "num_samples": manifest.num_samples,
            "rows": manifest.rows,
            "branches": manifest.branches,
            "classes": list(manifest.classes)
            if manifest.text is None
            else [f"prompt {i}: {p!r}" for i, p in enumerate(manifest.text["prompts"])],
            "sampler": f"N={s.steps}, w={s.guidance}, r_temp={s.r_temp}, sm_temp={s.sm_temp}"
            if "rule" not in s.to_dict()  # a file from before sampling rules were recorded: MaskGIT's
            else f"N={s.steps}, {s.rule} rule, CFG scale {s.guidance}, temperature {s.temperature}",
            "seed": manifest.seed,
            "format": manifest.format,
            "shards": len(manifest.shards),
            "codec": codec.spec,
            "decoding": codec.describe(),
            "bytes": manifest.bytes,
            "raw_bytes_per_row": dims.N * dims.T * dims.D * 2,  # float16 features
            "fields": [(name, dtype.name, list(shape)) for name, (shape, dtype) in field_specs(dims, codec).items()],
            "hub_features": hf_features(dims, codec)._to_yaml_list()
            if parquet
            else None,  # Parquet: the Hub's viewer reads them
            "dims": {"N": dims.N, "L": dims.L, "C": dims.C, "D": dims.D, "V": dims.V},
        }
    )
