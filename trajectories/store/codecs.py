"""Feature codecs: how `features` [rows, N, L+C, D] float16 is stored.

The transform runs in numpy and the stored arrays are plain integer / float arrays under standard
zstd compression, so any Zarr or Parquet reader can open the files (no custom filters).

- `lossless`: float16 as produced by the rollout.
- `quant:bits=B` (B = 2…8, default 8): per-token absmax scale (float16) and a signed B-bit integer
  code per value, stored as int8. Error per value ≤ scale / 2; fewer bits compress further.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trajectories.errors import MigmError


@dataclass(frozen=True)
class Codec:
    name: str = "lossless"
    bits: int = 8

    @property
    def spec(self) -> str:
        return self.name if self.name == "lossless" else f"{self.name}:bits={self.bits}"

    @property
    def lossy(self) -> bool:
        return self.name != "lossless"

    def to_dict(self) -> dict:
        return {"name": self.name} if not self.lossy else {"name": self.name, "bits": self.bits}

    @property
    def levels(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def encode(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """float features [..., D] -> the arrays to store."""
        f16 = np.asarray(features, dtype=np.float16)
        if not self.lossy:
            return {"features": f16}
        # torch for the float16 arithmetic: numpy's float16 conversions are several times slower
        x = torch.from_numpy(f16).float()
        scale = (x.abs().amax(-1, keepdim=True) / self.levels).half()
        safe = torch.where(scale == 0, 1, scale).float()
        q = torch.round(x / safe).clamp_(-self.levels, self.levels).to(torch.int8)
        return {"features_q": q.numpy(), "features_scale": scale[..., 0].numpy()}

    def decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Stored arrays -> float16 features [..., D]."""
        if not self.lossy:
            return arrays["features"]
        q = torch.from_numpy(np.ascontiguousarray(arrays["features_q"])).float()
        scale = torch.from_numpy(np.ascontiguousarray(arrays["features_scale"])).float()
        return (q * scale[..., None]).half().numpy()

    def stored_fields(self) -> tuple[str, ...]:
        return ("features",) if not self.lossy else ("features_q", "features_scale")


def parse_codec(spec: str) -> Codec:
    """'lossless', 'quant', 'quant:bits=6' -> Codec."""
    name, _, args = spec.partition(":")
    if name == "lossless" and not args:
        return Codec()
    if name != "quant":
        raise MigmError(f"unknown codec {spec!r}; known codecs: lossless, quant[:bits=2..8]")
    bits = 8
    for kv in filter(None, args.split(",")):
        key, _, value = kv.partition("=")
        if key != "bits" or not value.isdigit() or not 2 <= int(value) <= 8:
            raise MigmError(f"bad codec option {kv!r} in {spec!r}; use quant:bits=2..8")
        bits = int(value)
    return Codec("quant", bits)
