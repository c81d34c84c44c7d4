"""What the GPU checks report beside latency: model FLOP utilisation (MFU) against the card's bf16 dense
peak, and which fused attention kernel (SDPA backend) a forward can run on.

MFU = achieved FLOP/s (counted FLOPs of the work done, `evaluate.count_flops`) / the card's peak. The peak
is the vendor's dense (no 2:4 sparsity) bf16 tensor-core figure with fp32 accumulation, looked up by the
device name torch reports; a card not in the table gets no MFU (None), never a guess.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

# Dense bf16 TFLOP/s (vendor datasheets), matched in order against torch.cuda.get_device_name(): more
# specific names first (an "H100 PCIe" is not an SXM H100, an "L40S" not an "L4").
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H200", 989.0),  # H200 SXM (H200 NVL: 836)
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # H100 SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),  # SXM and PCIe
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),  # with fp32 accumulation (330 with fp16 accumulation)
]


def peak_tflops(device_name: str) -> float | None:
    """The card's bf16 dense peak in TFLOP/s, or None for a card not in the table."""
    for key, peak in PEAK_BF16_TFLOPS:
        if key in device_name:
            return peak
    return None


def utilisation(flops: float, seconds: float, peak: float | None) -> tuple[float, float | None]:
    """(achieved TFLOP/s, MFU as a fraction of `peak`, None without one)."""
    tflops = flops / seconds / 1e12
    return tflops, (tflops / peak if peak else None)


def sdpa_backends(fn: Callable, *args) -> dict[str, str]:
    """For the fused kernels (flash, memory-efficient): "ok" when `fn(*args)` runs with attention restricted
    to that kernel, else why not (torch's own warnings say why a kernel was refused, e.g. an attention mask
    for flash, fp32 inputs, a head size)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        with warnings.catch_warnings(record=True) as caught, sdpa_kernel(backend), torch.no_grad():
            warnings.simplefilter("always")
            try:
                fn(*args)
                out[name] = "ok"
            except RuntimeError as e:
                reasons = [
                    str(w.message).strip().splitlines()[0] for w in caught if "not used because" in str(w.message)
                ]
                detail = [
                    str(w.message).strip().splitlines()[0] for w in caught if "not used because" not in str(w.message)
                ]
                out[name] = "; ".join(reasons + detail[:2]) or str(e).strip().splitlines()[0]
    return out


def token_agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """How far two rollouts from the same seeds agree ([batch, L] tokens each, e.g. eager vs `--compile` in
    bf16, where kernels that round differently can flip a close draw): the fraction of tokens that are equal
    and of images whose every token is."""
    same = a.cpu() == b.cpu()
    return {"tokens": same.float().mean().item(), "images": same.all(dim=1).float().mean().item()}
