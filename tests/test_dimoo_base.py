"""The Lumina-DiMOO base: the published fixture (`tests/fixtures/published/dimoo/`, made by the
published code on a tiny random checkpoint) loads through `load_base` and reproduces its prompt ids,
sequences, features, logits and VQ decode; padded batches equal batch 1; the shortcut's new tokens
follow the published layout; fingerprints and bad folders."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import DIMOO_FIXTURE, write_tiny_dimoo
from helpers import rel
from safetensors.torch import load_file, save_file

from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.dimoo_layout import SpecialTokens, cell_positions, prompt_text, sequence_length
from migm.trajectories.errors import MigmError

CHECKPOINT = DIMOO_FIXTURE / "checkpoint"
PROMPT = "a photo of a red cat"


def load(folder: Path, **kw):
    return load_base(BaseSpec(name="dimoo", checkpoint=str(folder), device="cpu", **{"height": 48, "width": 48} | kw))


def load_refused(folder: Path, **kw) -> str:
    with pytest.raises(MigmError) as e:
        load(folder, **kw)
    message = str(e.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def io() -> dict:
    return load_file(str(DIMOO_FIXTURE / "io.safetensors"))


@pytest.fixture(scope="module")
def base():
    return load(CHECKPOINT)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_dimoo(tmp_path_factory.mktemp("dimoo") / "tiny")


def stack_rows(*conds: torch.Tensor) -> torch.Tensor:
    """Prompt-id blocks [n_i, P_i] -> one [sum n_i, max P_i] block, right-padded with -1."""
    P = max(c.shape[1] for c in conds)
    return torch.cat([torch.nn.functional.pad(c, (0, P - c.shape[1]), value=-1) for c in conds])


def fixture_tokens(io: dict, base, prompt_len: int) -> torch.Tensor:
    """The loop-level image tokens of the fixture's sequence (mask id -> V, code id -> code)."""
    cells = io["cond_ids"].gather(1, cell_positions(torch.tensor([prompt_len]), *base.grid))
    return torch.where(cells == base.special.mask, base.V, cells - base.special.image_offset)


def test_fixture_loads_with_its_dims_and_special_ids(base):
    meta = json.loads((DIMOO_FIXTURE / "meta.json").read_text())
    assert base.grid == tuple(meta["grid"]) and base.L == 9 and base.V == meta["codebook"] == base.mask_id
    assert base.D == 64 and base.text and base.num_classes == 0 and base.precision == "fp32"
    assert base.special == SpecialTokens(
        mask=255, newline=254, boa=253, eoa=252, boi=251, eoi=250, uncondition=38, image_offset=256
    )
    assert base.sampler_defaults == {"rule": "dimoo", "steps": 64, "guidance": 4.0, "temperature": 1.0}
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in base.net.parameters())  # none left on meta
    assert len(base.fingerprint) == 64


def test_prompt_ids_and_sequences_are_the_published_ones(base, io):
    meta = json.loads((DIMOO_FIXTURE / "meta.json").read_text())
    assert prompt_text(PROMPT) == f"<system>{meta['system_prompt']}</system><user>{PROMPT}</user>"
    cond, uncond = base.encode_prompts([PROMPT]), base.null_cond(1)
    assert cond.tolist() == io["cond_ids"][:, :19].tolist()
    assert uncond.tolist() == io["uncond_ids"][:, :14].tolist()
    assert int(io["code_start"]) == 19 + 2 and sequence_length(19, *base.grid) == io["cond_ids"].shape[1]
    tokens = fixture_tokens(io, base, 19)
    assert (tokens == base.V).any() and (tokens < base.V).any()  # the fixture mixes masked and committed cells
    ids, valid = base.sequences(tokens, cond)
    assert ids.tolist() == io["cond_ids"].tolist() and valid.all()
    ids, _ = base.sequences(tokens, uncond)  # the uncond branch: its prompt, then the same image part
    assert ids.tolist() == io["uncond_ids"].tolist()
    # C: the non-image positions of an empty prompt's row
    empty = len(base.tokenizer(prompt_text(""), add_special_tokens=False)["input_ids"])
    assert base.C == sequence_length(empty, *base.grid) - base.L


def test_features_and_logits_reproduce_the_published_model(base, io):
    tokens = fixture_tokens(io, base, 19)
    for cond, branch in ((base.encode_prompts([PROMPT]), "cond"), (base.null_cond(1), "uncond")):
        logits, feature = base.forward(tokens, cond)
        assert rel(feature, io[f"{branch}_feature"]) < 1e-4
        assert rel(base.net.transformer.ff_out(feature), io[f"{branch}_logits"]) < 1e-4
        cells = cell_positions(torch.tensor([cond.shape[1]]), *base.grid)[0]
        ref = io[f"{branch}_logits"][:, cells, 256 : 256 + base.V]  # image cells x image-code rows
        assert logits.shape == (1, base.L, base.V) and rel(logits, ref) < 1e-4
        assert torch.equal(base.head(feature, cond), logits)


def test_vq_decode_reproduces_the_published_image(base, io):
    images = base.decode(io["vq_codes"].reshape(1, -1))
    assert images.shape == io["vq_image"].shape == (1, 3, 48, 48)
    assert rel(images, io["vq_image"]) < 1e-4 and images.min() >= 0 and images.max() <= 1
    with pytest.raises(MigmError, match="no masked cells"):
        base.decode(torch.full((1, base.L), base.V))


@pytest.mark.parametrize("which", ["fixture", "tiny-gqa"])
def test_padded_batch_equals_batch_one(base, tiny, which):
    b = base if which == "fixture" else load(tiny, height=64, width=32)
    prompts = [PROMPT, "a small blue dog on white background", "digit seven"]
    cond = stack_rows(b.encode_prompts(prompts), b.null_cond(2))  # cond and uncond rows in one batch
    R = cond.shape[0]
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, b.V + 1, (R, b.L), generator=g)
    logits, feature = b.forward(tokens, cond)
    valid = b.feature_valid(cond)
    assert valid.shape == feature.shape[:2] and len(set(valid.sum(1).tolist())) > 2  # rows of different lengths
    assert (feature[~valid] == 0).all()
    for r in range(R):
        row = cond[r : r + 1, : int((cond[r] >= 0).sum())]
        alone_logits, alone = b.forward(tokens[r : r + 1], row)
        n = alone.shape[1]
        assert int(valid[r].sum()) == n
        assert rel(feature[r, :n], alone[0]) < 1e-4 and rel(logits[r], alone_logits[0]) < 1e-4


def test_new_tokens_follow_the_published_layout(base, io):
    """The fixture's shortcut step: the cond row's new tokens are every prompt id plus the committed cells."""
    cond = stack_rows(base.encode_prompts([PROMPT]), base.null_cond(1))  # rows: cond branch, uncond branch
    positions = io["sc_new_map"][0].nonzero()[:, 0]
    cells = positions[positions >= 19]
    new_pos = cells - 19 - 2  # cell index in the 3x3 grid (first image row: no newline before it)
    new_ids = io["sc_new_ids"][:, 19:] - base.special.image_offset
    emb, pos, valid = base.new_tokens(new_ids, new_pos[None], cond, torch.tensor([0, 1]))
    assert emb.shape == (2, 21, base.D) and pos.shape == valid.shape == (2, 21)
    assert valid[0].all() and pos[0].tolist() == positions.tolist()
    assert torch.equal(emb[0], base.net.transformer.wte(io["sc_new_ids"][0]))
    # the uncond row: the same cells only, at their positions after the 14 uncond prompt ids
    assert valid[1].tolist() == [True, True] + [False] * 19
    assert pos[1, :2].tolist() == (14 + 2 + new_pos).tolist() and (emb[1, 2:] == 0).all()
    assert torch.equal(emb[1, :2], base.embed(io["sc_new_ids"][:, 19:], None)[0])


def test_new_tokens_by_hand_for_two_samples_and_two_branches(base):
    """B = 2 samples, rows r and r+B share the new cells; -1 marks no cell; prompts of different lengths."""
    cond = stack_rows(base.encode_prompts(["a red cat", "a small blue dog on white background"]), base.null_cond(2))
    new_ids = torch.tensor([[4, 7, -1], [0, 31, 2]])
    new_pos = torch.tensor([[8, 0, 0], [3, 4, 5]])
    emb, pos, valid = base.new_tokens(new_ids, new_pos, cond, torch.tensor([0, 0, 1, 1]))
    off, w = base.special.image_offset, base.grid[1]
    for r in range(4):
        sample, prompt = r % 2, cond[r][cond[r] >= 0]
        ids_r, pos_r = [], []
        if r < 2:  # cond branch: every prompt id at 0..p-1
            ids_r, pos_r = prompt.tolist(), list(range(len(prompt)))
        for code, cell in zip(new_ids[sample].tolist(), new_pos[sample].tolist()):
            if code >= 0:
                ids_r.append(code + off)
                pos_r.append(len(prompt) + 2 + cell // w * (w + 1) + cell % w)
        k = len(ids_r)
        assert valid[r].sum() == k and valid[r, :k].all() and pos[r, :k].tolist() == pos_r
        assert torch.equal(emb[r, :k], base.net.transformer.wte(torch.tensor(ids_r)))
    assert emb.shape[1] == int(valid.sum(1).max())


def test_fingerprint_follows_the_stored_weights_only(tiny, tmp_path):
    first = load(tiny)
    assert load(tiny).fingerprint == first.fingerprint
    one_shard = write_tiny_dimoo(tmp_path / "one", shards=1)
    assert load(one_shard).fingerprint == first.fingerprint  # the shard split does not matter
    other = write_tiny_dimoo(tmp_path / "other", seed=1)
    assert load(other).fingerprint != first.fingerprint


def test_bf16_loads_straight_into_bf16(tiny):
    fp32 = load(tiny)
    bf16 = load(tiny, precision="bf16")
    assert bf16.precision == "bf16" and all(p.dtype == torch.bfloat16 for p in bf16.net.parameters())
    assert bf16.fingerprint == fp32.fingerprint  # the same stored weights
    cond = fp32.encode_prompts([PROMPT])
    tokens = torch.randint(0, fp32.V + 1, (1, fp32.L), generator=torch.Generator().manual_seed(0))
    _, ref = fp32.forward(tokens, cond)
    _, got = bf16.forward(tokens, cond)
    assert got.dtype == torch.bfloat16 and rel(got, ref) < 5e-2


def test_single_model_safetensors_without_index(tiny, tmp_path):
    folder = tmp_path / "single"
    shutil.copytree(tiny, folder)
    state = {}
    for shard in sorted(folder.glob("model-*.safetensors")):
        state |= load_file(str(shard))
        shard.unlink()
    (folder / "model.safetensors.index.json").unlink()
    save_file(state, str(folder / "model.safetensors"))
    assert load(folder).fingerprint == load(tiny).fingerprint


@pytest.mark.parametrize(
    "remove, named",
    [
        ("config.json", "config.json"),
        ("model.safetensors.index.json", "model.safetensors.index.json"),
        ("tokenizer.json tokenizer_config.json", "tokenizer"),
        ("vqvae", "vqvae/"),
        ("vqvae/diffusion_pytorch_model.safetensors", "vqvae/diffusion_pytorch_model.safetensors"),
    ],
)
def test_a_folder_missing_a_piece_is_named(tiny, tmp_path, remove, named):
    folder = tmp_path / "broken"
    shutil.copytree(tiny, folder)
    for name in remove.split():
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    message = load_refused(folder)
    assert named in message and "missing" in message


def test_a_missing_shard_is_named(tiny, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny, folder)
    (folder / "model-00002-of-00002.safetensors").unlink()
    assert "model-00002-of-00002.safetensors" in load_refused(folder)


def test_keys_are_strict(tiny, tmp_path):
    folder = tmp_path / "keys"
    shutil.copytree(tiny, folder)
    shard = folder / "model-00001-of-00002.safetensors"
    state = load_file(str(shard))
    dropped = sorted(state)[0]
    wrong = sorted(state)[1]
    state.pop(dropped)
    state[wrong] = torch.zeros(3, 5)
    state["model.transformer.extra.weight"] = torch.zeros(2)
    save_file(state, str(shard))
    message = load_refused(folder)
    assert f"missing keys: {dropped.removeprefix('model.')}" in message
    assert "unexpected keys: transformer.extra.weight" in message
    assert f"wrong shapes: {wrong.removeprefix('model.')} (3, 5)" in message


@pytest.mark.parametrize("size", [50, 0, -16, 8])
def test_image_sizes_must_be_positive_multiples_of_16(tiny, size):
    assert "multiple of 16" in load_refused(tiny, height=size)
    assert "--width" in load_refused(tiny, width=size)


def test_prompts_and_options_are_checked(base, tiny, tmp_path):
    with pytest.raises(MigmError, match="prompt 2 is empty"):
        base.encode_prompts([PROMPT, "  "])
    assert "--checkpoint DIR" in str(pytest.raises(MigmError, load_base, BaseSpec("dimoo", device="cpu")).value)
    assert "not a folder" in load_refused(tmp_path / "nowhere")
    with pytest.raises(MigmError, match="--height not used by --model maskgit-digits"):
        load_base(BaseSpec("maskgit-digits", height=64, device="cpu"))
    assert load_base(BaseSpec("maskgit-digits", device="cpu")).precision == "fp32"  # the default for MaskGIT
    folder = tmp_path / "special"
    shutil.copytree(tiny, folder)
    (folder / "special_tokens.json").write_text(json.dumps({"mask": 255, "image_offset": 270}))
    assert "beyond the vocabulary" in load_refused(folder)
    (folder / "special_tokens.json").write_text(json.dumps({"masks": 255}))
    assert "unknown keys masks" in load_refused(folder)
