"""A tiny random aMUSEd diffusers folder, built offline with diffusers' and transformers' own classes
(UVit2DModel, VQModel, CLIPTextModelWithProjection, a CLIPTokenizer over a tiny local vocabulary,
AmusedScheduler) and written by `AmusedPipeline.save_pretrained`: the layout a download has."""

import json
from pathlib import Path

import torch

LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS = ["the</w>", "cat</w>", "dog</w>", "red</w>", "a</w>"]


def write_tokenizer_files(folder: Path) -> Path:
    """CLIP BPE files: every letter alone and word-final, a few whole words by merges."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["<|startoftext|>", "<|endoftext|>", *LETTERS, *(c + "</w>" for c in LETTERS)]
    merges = ["t h", "th e</w>", "c a", "ca t</w>", "d o", "do g</w>", "r e", "re d</w>"]
    vocab += ["th", "ca", "do", "re", *WORDS[:4]]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(dict.fromkeys(vocab))}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def tiny_components(tmp: Path, sample_size: int = 4, seed: int = 0) -> dict:
    from diffusers import AmusedScheduler, UVit2DModel, VQModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    folder = write_tokenizer_files(tmp / "tok")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=77)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=24,
            projection_dim=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    transformer = UVit2DModel(
        hidden_size=16,
        use_bias=False,
        cond_embed_dim=16,
        micro_cond_encode_dim=2,
        micro_cond_embed_dim=10,
        encoder_hidden_size=16,
        vocab_size=33,
        codebook_size=32,
        in_channels=8,
        block_out_channels=16,
        num_res_blocks=1,
        block_num_heads=2,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        sample_size=sample_size,
    )
    with torch.no_grad():  # larger logits than the init gives, so sampling depends on the input
        transformer.mlm_layer.conv2.weight.mul_(8)
    vqvae = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        num_vq_embeddings=32,
        vq_embed_dim=4,
        norm_num_groups=4,
        sample_size=8,
        lookup_from_codebook=True,
        force_upcast=False,
    )
    scheduler = AmusedScheduler(mask_token_id=32)
    return {
        "vqvae": vqvae,
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "transformer": transformer,
        "scheduler": scheduler,
    }


def write_amused(folder: Path, sample_size: int = 4, seed: int = 0) -> Path:
    """The tiny random aMUSEd as a diffusers folder (safetensors weights)."""
    from diffusers import AmusedPipeline

    pipe = AmusedPipeline(**tiny_components(folder.parent / f"{folder.name}-tok", sample_size, seed))
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder
