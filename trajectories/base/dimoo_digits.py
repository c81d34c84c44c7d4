"""dimoo-digits: the embedded text-to-image base, a small Lumina-DiMOO (LLaDA) trained here on
scikit-learn's 8×8 digits, and the prompts that name its digits.

It ships as a DiMOO folder in `weights/dimoo-digits/` (config.json, model.safetensors, the tokenizer
files, special_tokens.json, meta.json) and loads through `load_dimoo`, with `decode_digits` in place
of a VQ model: the 17 grey levels are its image codes (V = 17), 8 rows of 8 cells. A prompt names a
digit in words or numerals ("a handwritten seven", "the digit 7"); that digit is the sample's label
when the shipped classifier scores it. Trained by `python -m migm.trajectories.train_dimoo_digits`.
"""

from __future__ import annotations

import re
from pathlib import Path

from migm.trajectories.base.digits import decode_digits, digit_statistics, score_digits
from migm.trajectories.base.dimoo import DiMOO
from migm.trajectories.base.dimoo_loading import load_dimoo, read_json
from migm.trajectories.errors import MigmError

WEIGHTS = Path(__file__).parent / "weights" / "dimoo-digits"
GRID = (8, 8)  # cells; the decoder draws one pixel per cell (not DiMOO's 16)
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {word} is the digit's name, {numeral} its figure. The held-out phrasings recombine the training
# words (a numeral where training had the name, or the reverse), so every word they use is trained.
TRAIN_PHRASINGS = (
    "a handwritten {word}",
    "the digit {numeral}",
    "number {word}",
    "a {numeral}",
    "handwritten digit {word}",
    "the number {numeral}",
    "an image of the digit {word}",
)
HELD_OUT_PHRASINGS = (
    "a handwritten {numeral}",
    "the digit {word}",
    "number {numeral}",
)
PHRASINGS = TRAIN_PHRASINGS + HELD_OUT_PHRASINGS


def phrase(phrasing: str, digit: int) -> str:
    """One prompt: `phrasing` naming `digit`."""
    return phrasing.format(word=DIGIT_WORDS[digit], numeral=str(digit))


def prompts_of(phrasings: tuple[str, ...] = PHRASINGS) -> list[str]:
    """Every digit in every phrasing, phrasing-major: cycling over the list cycles over the ten digits
    first, so any run of 10·k consecutive prompts holds each digit k times."""
    return [phrase(p, d) for p in phrasings for d in range(10)]


def label_of(prompt: str) -> int:
    """The digit a prompt names (by word or numeral, any case), or -1 when it names none or several."""
    named = set()
    for word in re.findall(r"\w+", prompt.lower()):
        if word in DIGIT_WORDS:
            named.add(DIGIT_WORDS.index(word))
        elif len(word) == 1 and word.isdigit():
            named.add(int(word))
    return named.pop() if len(named) == 1 else -1


def load_dimoo_digits(
    device: str = "cpu", precision: str | None = None, weights_dir: str | Path | None = None
) -> DiMOO:
    """The shipped folder through `load_dimoo` (the --model dimoo loader), fp32 unless asked otherwise,
    with the sampler defaults of its held-out sweep (meta.json)."""
    folder = Path(weights_dir) if weights_dir else WEIGHTS
    if not (folder / "meta.json").is_file():
        raise MigmError(f"dimoo-digits weights not found in {folder} (run `make train-dimoo-digits`)")
    meta = read_json(folder / "meta.json")
    base = load_dimoo(
        str(folder),
        device=device,
        precision=precision or "fp32",
        decoder=decode_digits,
        grid=GRID,
        name="dimoo-digits",
    )
    base.sampler_defaults = dict(meta["sampler"])
    base.default_prompts = prompts_of()
    base.label_of = label_of
    base.scorer, base.score_statistics = score_digits, digit_statistics
    return base
