"""Feature codecs: how `features` [rows, N, L+C, D] float16 is stored.

The transform runs in numpy/torch and the stored arrays are plain integer / float arrays under standard
compression (zstd; Zarr's core blosc codec for delta codes), so any Zarr or Parquet reader opens the files.

- `lossless`: float16 as produced by the rollout.
- `quant:bits=B` (B = 2…8, default 8): per-token absmax scale (float16) and a signed B-bit integer
  code per value, stored as int8. Error per value ≤ scale / 2; fewer bits compress further.
- `delta:bits=B,keyframe=k` (B = 2…8, fractional allowed, default 6; k ≥ 1, default 16): temporal
  codes. Keyframe steps (0, k, 2k, …) are coded as `quant:bits=B` does; every other step stores the
  quantised difference from the previous *decoded* step, with the keyframe's per-token scale (raised
  where a difference would not fit in ±127 codes), so errors do not accumulate: error per value
  ≤ that step's scale / 2. Consecutive features are close, so the codes are small and compress far
  better than quant codes of the same precision. Codes are stored zigzag-mapped as uint8 (0, −1, 1,
  −2, … → 0, 1, 2, 3, …), which bit-shuffled (Zarr) or byte-split (Parquet) compresses well. Step s
  decodes from its keyframe alone: f_s = Σ_{j = k⌊s/k⌋}^{s} code_j · scale_j (float32 sums, in order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from migm.trajectories.errors import MigmError

KNOWN = "lossless, quant[:bits=2..8], delta[:bits=2..8,keyframe=K]"


@dataclass(frozen=True)
class Codec:
    name: str = "lossless"
    bits: float = 8  # quant: an integer; delta: may be fractional (its codes are entropy-coded, not fixed width)
    keyframe: int = 16  # delta: a keyframe every `keyframe` steps

    @property
    def spec(self) -> str:
        if self.name == "delta":
            return f"delta:bits={self.bits:g},keyframe={self.keyframe}"
        return self.name if self.name == "lossless" else f"{self.name}:bits={self.bits:g}"

    @property
    def lossy(self) -> bool:
        return self.name != "lossless"

    def to_dict(self) -> dict:
        if not self.lossy:
            return {"name": self.name}
        d = {"name": self.name, "bits": self.bits}
        return {**d, "keyframe": self.keyframe} if self.name == "delta" else d

    @property
    def levels(self) -> float:
        return 2 ** (self.bits - 1) - 1

    def stored_fields(self) -> tuple[str, ...]:
        return {"lossless": ("features",), "quant": ("features_q", "features_scale")}.get(
            self.name, ("features_delta", "features_scale")
        )

    def step_chunk(self, N: int) -> int:
        """Steps per stored chunk along the step axis: a keyframe's group for delta (so reading one
        step reads one group), the whole trajectory otherwise."""
        return min(self.keyframe, N) if self.name == "delta" else N

    def step_range(self, s: int) -> tuple[int, int]:
        """The stored steps [lo, hi) that step s decodes from: from its keyframe for delta."""
        return (s - s % self.keyframe if self.name == "delta" else s), s + 1

    def encode(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """float features [..., N, T, D] -> the arrays to store."""
        f16 = np.asarray(features, dtype=np.float16)
        if not self.lossy:
            return {"features": f16}
        # torch for the float16 arithmetic: numpy's float16 conversions are several times slower
        x = torch.from_numpy(f16).float()
        if self.name == "delta":
            return delta_encode(x, self.levels, self.keyframe)
        scale = token_scale(x, self.levels)
        q = torch.round(x / safe(scale)[..., None]).clamp_(-self.levels, self.levels).to(torch.int8)
        return {"features_q": q.numpy(), "features_scale": scale.half().numpy()}

    def decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Stored arrays -> float16 features [..., n, T, D]. For delta the arrays' first step must be a
        keyframe (all steps, or the slice `step_range` names)."""
        if not self.lossy:
            return arrays["features"]
        scale = torch.from_numpy(np.ascontiguousarray(arrays["features_scale"])).float()
        if self.name == "delta":
            codes = unzigzag(torch.from_numpy(np.ascontiguousarray(arrays["features_delta"])))
            return delta_decode(codes, scale, self.keyframe).half().numpy()
        q = torch.from_numpy(np.ascontiguousarray(arrays["features_q"])).float()
        return (q * scale[..., None]).half().numpy()

    def decode_step(self, arrays: dict[str, np.ndarray], s: int, first: int = 0) -> np.ndarray:
        """Feature of step s, float16 [..., T, D], from stored arrays that hold steps first, first + 1, …
        (all of them, or only `step_range(s)`); only the steps from s's keyframe on are decoded."""
        lo, hi = self.step_range(s)
        if lo < first:
            raise ValueError(f"step {s} decodes from step {lo}; the arrays start at step {first}")
        window = slice(lo - first, hi - first)
        part = {
            name: arrays[name][..., window, :] if name == "features_scale" else arrays[name][..., window, :, :]
            for name in self.stored_fields()
        }
        return self.decode(part)[..., -1, :, :]

    def describe(self) -> str:
        """How a plain reader decodes the stored arrays (Markdown, for the dataset card)."""
        if self.name == "quant":
            return "`features = features_q * features_scale[..., None]` (error per value ≤ scale / 2)."
        if self.name == "delta":
            k = self.keyframe
            return (
                f"Temporal codes, keyframe every k = {k} steps. `features_delta` holds zigzag-mapped codes: "
                "`code = (u >> 1) ^ -(u & 1)` on int16 (0, 1, 2, 3, … → 0, −1, 1, −2, …). Step s is the "
                f"float32 running sum of `code_j * features_scale_j` over j from its keyframe `k * (s // k)` "
                "to s, added in step order, then rounded to float16 (error per value ≤ that step's scale / 2). "
                "With numpy, for one row:\n\n```python\n"
                "u = row['features_delta'].astype(np.int16)\n"
                "code = (u >> 1) ^ -(u & 1)\n"
                "step = code.astype(np.float32) * row['features_scale'].astype(np.float32)[..., None]\n"
                "feats = np.empty_like(step)\n"
                "for s in range(len(step)):\n"
                f"    feats[s] = step[s] if s % {k} == 0 else feats[s - 1] + step[s]\n"
                "features = feats.astype(np.float16)\n```"
            )
        return "`features` is the float16 feature itself."


def token_scale(x: torch.Tensor, levels: float) -> torch.Tensor:
    """Per-token absmax scale [..., T] of float32 features [..., T, D], rounded to float16 (kept as float32)."""
    return (x.abs().amax(-1) / levels).half().float()


def safe(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale == 0, 1, scale)  # an all-zero token (padding) codes as zeros


def zigzag(codes: torch.Tensor) -> torch.Tensor:
    """Signed codes in [−127, 127] -> uint8 0, 1, 2, … for 0, −1, 1, …"""
    c = codes.to(torch.int16)
    return ((c << 1) ^ (c >> 15)).to(torch.uint8)


def unzigzag(u: torch.Tensor) -> torch.Tensor:
    c = u.to(torch.int16)
    return (c >> 1) ^ -(c & 1)


def delta_encode(x: torch.Tensor, levels: float, keyframe: int) -> dict[str, np.ndarray]:
    """float32 features [..., N, T, D] -> zigzag codes and per-token scales; the reference for each
    step is the previous step as the decoder reconstructs it (same float32 operations)."""
    N = x.shape[-3]
    codes = torch.empty(x.shape, dtype=torch.uint8)
    scales = torch.empty(x.shape[:-1], dtype=torch.float16)
    prev = key = None
    for s in range(N):
        f = x[..., s, :, :]
        if s % keyframe == 0:
            key = token_scale(f, levels)
            r, scale = f, key
        else:
            r = f - prev
            # the keyframe's precision, or coarser where the difference would not fit in ±127 codes
            scale = torch.maximum(key, r.abs().amax(-1) / 127).half().float()
        c = torch.round(r / safe(scale)[..., None]).clamp_(-127, 127)
        step = c * scale[..., None]
        prev = step if s % keyframe == 0 else prev + step
        codes[..., s, :, :] = zigzag(c)
        scales[..., s, :] = scale.half()
    return {"features_delta": codes.numpy(), "features_scale": scales.numpy()}


def delta_decode(codes: torch.Tensor, scale: torch.Tensor, keyframe: int) -> torch.Tensor:
    """Signed codes [..., n, T, D] and float32 scales [..., n, T] whose first step is a keyframe ->
    float32 features, summed in step order exactly as the encoder did."""
    out = codes.float() * scale[..., None]
    for s in range(1, out.shape[-3]):
        if s % keyframe:
            out[..., s, :, :] += out[..., s - 1, :, :]
    return out


def parse_codec(spec: str) -> Codec:
    """'lossless', 'quant', 'quant:bits=6', 'delta', 'delta:bits=5.5,keyframe=8' -> Codec."""
    name, _, args = spec.partition(":")
    if name == "lossless" and not args:
        return Codec()
    if name not in ("quant", "delta"):
        raise MigmError(f"unknown codec {spec!r}; known codecs: {KNOWN}")
    options = {"bits": 8 if name == "quant" else 6, "keyframe": 16}
    for kv in filter(None, args.split(",")):
        key, _, value = kv.partition("=")
        v = number(key, value, name)
        if v is None:
            raise MigmError(f"bad codec option {kv!r} in {spec!r}; use {KNOWN}")
        options[key] = v
    if name == "quant":
        return Codec("quant", options["bits"])
    return Codec("delta", options["bits"], options["keyframe"])


def number(key: str, value: str, name: str) -> float | int | None:
    """A codec option's value, or None when it is not valid for the codec."""
    try:
        v = float(value)
    except ValueError:
        return None
    if key == "bits" and 2 <= v <= 8 and (v.is_integer() or name == "delta"):
        return int(v) if v.is_integer() else v
    if key == "keyframe" and name == "delta" and v.is_integer() and v >= 1:
        return int(v)
    return None
