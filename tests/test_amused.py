"""aMUSEd as a base, checked against diffusers' own AmusedPipeline on a tiny random diffusers folder."""

import numpy as np
import pytest
import torch
from amused_folder import write_amused

from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.amused import load_amused
from migm.trajectories.base.protocol import TextBase
from migm.trajectories.rollout import SamplerConfig, _noise, rollout, sample_seeds

PROMPTS = ["the red cat", "a dog"]
N = 8


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_amused(tmp_path_factory.mktemp("amused") / "amused-tiny")


@pytest.fixture(scope="module")
def base(folder):
    return load_base(BaseSpec("amused", checkpoint=str(folder), device="cpu"))


@pytest.fixture(scope="module")
def pipe(folder):
    from diffusers import AmusedPipeline

    pipe = AmusedPipeline.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_call(pipe, tokens: torch.Tensor):
    """The transformer's logits [R, L, V] as the pipeline calls it: prompts tokenized to max length, CLIP's
    penultimate hidden states and text_embeds, micro-conditioning (width, height, 0, 0, 6)."""
    ids = pipe.tokenizer(
        PROMPTS, return_tensors="pt", padding="max_length", truncation=True, max_length=pipe.tokenizer.model_max_length
    ).input_ids
    out = pipe.text_encoder(ids, return_dict=True, output_hidden_states=True)
    size = pipe.transformer.config.sample_size * pipe.vae_scale_factor
    micro = torch.tensor([[size, size, 0, 0, 6]], dtype=torch.float32).expand(len(PROMPTS), -1)
    h = pipe.transformer.config.sample_size
    logits = pipe.transformer(
        tokens.reshape(len(PROMPTS), h, h),
        micro_conds=micro,
        pooled_text_emb=out.text_embeds,
        encoder_hidden_states=out.hidden_states[-2],
    )
    return logits.reshape(len(PROMPTS), logits.shape[1], -1).permute(0, 2, 1)


@torch.no_grad()
def test_logits_equal_the_pipelines_transformer_call_and_the_head_reproduces_them(base, pipe):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, base.V + 1, (2, base.L), generator=g)  # V: masked
    expected = pipeline_call(pipe, torch.where(tokens == base.V, pipe.scheduler.config.mask_token_id, tokens))
    logits, feature = base.forward(tokens, base.encode_prompts(PROMPTS))
    assert feature.shape == (2, base.L, base.D)
    assert isinstance(base, TextBase)
    assert float((logits - expected).norm() / expected.norm()) < 1e-5
    assert float((base.head(feature) - logits).norm() / logits.norm()) < 1e-5


@torch.no_grad()
def test_vanilla_rollout_gives_the_pipelines_tokens_and_images_from_the_same_draws(base, pipe, monkeypatch):
    """B = N, 2 prompts, CFG at the pipeline's default scale: the scheduler's multinomial and Gumbel draws
    are fed from migm's per-sample uniforms, so both sample from the same randomness."""
    from diffusers.schedulers import scheduling_amused

    config = SamplerConfig.for_base(base, N)
    assert (config.guidance, config.temperature) == (10.0, 2.0)  # the pipeline's defaults
    seeds = sample_seeds(7, 0, len(PROMPTS))
    ours = rollout(base, base.encode_prompts(PROMPTS), seeds, config)
    noise = _noise(seeds, N, base.L, torch.device("cpu"))
    calls = {"sample": 0, "gumbel": 0}

    def multinomial(probs, num_samples, generator=None):
        u = noise[:, calls["sample"], 0].reshape(-1)
        calls["sample"] += 1
        from migm.trajectories.base.amused import sample_probs

        return sample_probs(probs, u)[:, None]

    def gumbel_noise(t, generator=None):
        u = noise[:, calls["gumbel"], 1]
        calls["gumbel"] += 1
        return -torch.log(-torch.log(u))

    monkeypatch.setattr(torch, "multinomial", multinomial)
    monkeypatch.setattr(scheduling_amused, "gumbel_noise", gumbel_noise)
    outputs = {}
    for kind in ("latent", "np"):
        calls.update(sample=0, gumbel=0)
        outputs[kind] = pipe(PROMPTS, num_inference_steps=N, output_type=kind).images
    assert calls == {"sample": N, "gumbel": N - 1}  # the last step commits every cell left, no ranking
    assert torch.equal(ours.tokens, outputs["latent"].reshape(len(PROMPTS), -1))
    images = base.decode(ours.tokens).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(images, outputs["np"])
    assert len(set(ours.tokens.flatten().tolist())) > 3  # the draws mattered


@torch.no_grad()
def test_batched_prompts_sample_what_each_samples_alone(base):
    config = SamplerConfig.for_base(base, N)
    seeds = sample_seeds(3, 0, len(PROMPTS))
    both = rollout(base, base.encode_prompts(PROMPTS), seeds, config)
    for i, prompt in enumerate(PROMPTS):
        alone = rollout(base, base.encode_prompts([prompt]), seeds[i : i + 1], config)
        assert torch.equal(alone.tokens[0], both.tokens[i])


def test_text_is_encoded_once_per_prompt(base, monkeypatch):
    base._text.clear()
    seen = []
    forward = base.text_encoder.forward
    monkeypatch.setattr(base.text_encoder, "forward", lambda ids, **kw: seen.append(ids) or forward(ids, **kw))
    rollout(base, base.encode_prompts(PROMPTS), sample_seeds(0, 0, 2), SamplerConfig.for_base(base, N))
    assert len(seen) == 3  # the two prompts and the empty negative prompt, not once per step


def test_feature_choice_transformer_output_has_the_up_block_in_its_head(folder):
    base = load_amused(str(folder), feature="transformer")
    cond = base.encode_prompts(PROMPTS)
    tokens = torch.full((2, base.L), base.mask_id)
    logits, feature = base.forward(tokens, cond)
    assert float((base.head(feature, cond) - logits).norm() / logits.norm()) < 1e-5
