"""M-RoPE positions and frequencies (Qwen2.5-VL, Qwen3-VL) against independent references.

Positions: `reference_positions` below re-implements the Qwen reference rule from the processor's
own outputs (`mm_token_type_ids`, `video_grid_thw`, `second_per_grid_ts`) and never reads our video
bank; our model derives its positions from token ids and the bank alone. transformers 5.24's own
`get_rope_index` is also compared where it follows the reference (docs/families.md §4: it starts
the text after a Qwen2.5-VL video too early when the clip is slow, e.g. 0.5 fps).
Frequencies: our rotary vs HF's `Qwen2_5_VLRotaryEmbedding` / `Qwen3VLTextRotaryEmbedding` at the
real checkpoints' `mrope_section`s.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen3VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding
from transformers.video_utils import VideoMetadata

import tl_video
from tl_video import KeyValueCache
from tl_video.loading.qwen_vl import qwen2_5_vl_config_fields, qwen3_vl_config_fields
from tl_video.model.config import VideoTransformerConfig
from tl_video.model.rotary import RotaryEmbedding, mrope_axis_of_frequency
from tl_video.testing import save_tiny_qwen2_5_vl, save_tiny_qwen3_vl
from tests.conftest import random_video
from tests.tolerances import EXACT, FUSED_VS_EAGER_FP32

PROMPT = "What happens in the video?"
SPLIT_TUBELETS = {"qwen2_5_vl": False, "qwen3_vl": True}  # Qwen3-VL: one position block per tubelet


def reference_positions(
    mm_token_type_ids: torch.Tensor,
    video_grid_thw: torch.Tensor,
    second_per_grid_ts: torch.Tensor | None,
    tokens_per_second: float,
    split_tubelets: bool,
    merge: int = 2,
) -> torch.Tensor:
    """[3, S] positions of one unpadded sequence by the Qwen reference rule (docs/families.md §4-§5)."""
    seconds = [1.0] * len(video_grid_thw) if second_per_grid_ts is None else second_per_grid_ts.tolist()
    grids = []
    for (t, h, w), spg in zip(video_grid_thw.tolist(), seconds):
        grids += [((1, h, w), 0.0)] * t if split_tubelets else [((t, h, w), spg)]
    blocks, start, next_grid = [], 0, iter(grids)
    for kind, group in itertools.groupby(mm_token_type_ids.tolist()):
        n = len(list(group))
        if kind == 0:
            blocks.append(torch.arange(start, start + n).expand(3, n))
        else:
            (t, h, w), spg = next(next_grid)
            tt = (torch.arange(t) * spg * tokens_per_second).long()
            grid = torch.meshgrid(tt, torch.arange(h // merge), torch.arange(w // merge), indexing="ij")
            blocks.append(torch.stack(grid).reshape(3, -1) + start)
        start = int(blocks[-1].max()) + 1
    return torch.cat(blocks, dim=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tl_video.HookedVideoTransformer]:
    root = tmp_path_factory.mktemp("qwen_positions")
    folders = {"qwen2_5_vl": save_tiny_qwen2_5_vl(root / "qwen2_5_vl"), "qwen3_vl": save_tiny_qwen3_vl(root / "qwen3_vl")}
    return {name: tl_video.HookedVideoTransformer.from_pretrained(folder, keep_hf_model=True) for name, folder in folders.items()}


def processor_kwargs(model, n_frames: int, fps: float | None) -> dict:
    """What the front end passes (Qwen3-VL: keep every frame), plus real timing when `fps` is given."""
    kwargs = {"do_sample_frames": False} if model.cfg.family == "qwen3_vl" else {}
    if fps is not None:
        kwargs["video_metadata"] = [VideoMetadata(total_num_frames=n_frames, fps=fps, frames_indices=list(range(n_frames)))]
    return kwargs


def use_frame_rate(monkeypatch, model, fps: float) -> None:
    """Let `prepare` give the processor real timing (`video_metadata`) through the front end's `process` hook."""
    def process(processor, text, frames):
        return processor(text=text, videos=[frames], return_tensors="pt", **processor_kwargs(model, len(frames), fps))

    monkeypatch.setattr(model.frontend, "process", process)


def our_positions(model, tokens, attention_mask=None):
    return model.position_ids(tokens, attention_mask, None, tokens.shape[0], tokens.shape[1], tokens.device)


def processed_inputs(model, prepared, fps: float | None = None):
    kwargs = processor_kwargs(model, len(prepared.frames), fps)
    return model.processor(text=prepared.text, videos=[prepared.frames], return_tensors="pt", **kwargs)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("fps", [None, 0.5])
def test_positions_follow_the_reference_rule(models, monkeypatch, family, fps):
    """Default timing (2/24 s per tubelet) and a slow clip (4 s per tubelet: t offsets 0 and 8)."""
    model = models[family]
    if fps is not None:
        use_frame_rate(monkeypatch, model, fps)
    prepared = model.prepare(video=random_video(30), prompt=PROMPT)
    processed = processed_inputs(model, prepared, fps)
    expected = reference_positions(
        processed["mm_token_type_ids"][0], processed["video_grid_thw"], processed.get("second_per_grid_ts"),
        getattr(model.hf_model[0].config.vision_config, "tokens_per_second", 1.0), SPLIT_TUBELETS[family],
    )
    ours = our_positions(model, prepared.tokens)[:, 0]
    assert ours.tolist() == expected.tolist()
    hf_positions, _ = model.hf_model[0].model.get_rope_index(
        processed["input_ids"], processed["mm_token_type_ids"], video_grid_thw=processed["video_grid_thw"],
        second_per_grid_ts=processed.get("second_per_grid_ts"),
    )
    video_end = prepared.layout.segments["video"].end
    # HF agrees up to the end of the video; after it only where its 5.24 shortcut equals max + 1.
    assert (hf_positions[:, 0, :video_end] == ours[:, :video_end]).all()
    if family == "qwen3_vl" or fps is None:
        assert (hf_positions[:, 0] == ours).all()


def test_same_pixels_at_another_frame_rate_are_another_video(models, monkeypatch):
    """The bank key covers every video input: the same frames timed differently get their own ids."""
    model = models["qwen2_5_vl"]
    default = model.prepare(video=random_video(31), prompt=PROMPT)
    use_frame_rate(monkeypatch, model, 0.5)
    slow = model.prepare(video=random_video(31), prompt=PROMPT)
    video = default.layout.positions("video")
    assert not (default.tokens[0, video] == slow.tokens[0, video]).any()
    after = default.layout.segments["after_video"].start
    assert our_positions(model, default.tokens)[0, 0, after] < our_positions(model, slow.tokens)[0, 0, after]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_left_padding_keeps_each_row_positions_and_logits(models, family):
    model = models[family]
    short = model.prepare(video=random_video(32), prompt="Go.")
    long = model.prepare(video=random_video(33), prompt="A much longer question about the video?")
    pad = long.tokens.shape[1] - short.tokens.shape[1]
    batch = torch.cat([torch.cat([torch.zeros(1, pad, dtype=torch.long), short.tokens], 1), long.tokens])
    mask = torch.ones_like(batch)
    mask[0, :pad] = 0
    positions = our_positions(model, batch, mask)
    assert positions[:, 0, :pad].eq(0).all(), "padding gets position 0 (as HF's get_rope_index)"
    assert positions[:, 0, pad:].tolist() == our_positions(model, short.tokens)[:, 0].tolist()
    assert positions[:, 1].tolist() == our_positions(model, long.tokens)[:, 0].tolist()
    with torch.no_grad():
        batched = model(batch, attention_mask=mask)
        alone = model(short.tokens)
    assert (batched[0, -1] - alone[0, -1]).abs().max() <= FUSED_VS_EAGER_FP32


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("split_at", ["video_start", "after_video"])
def test_cache_continuation_equals_one_forward(models, family, split_at):
    """The second chunk starts at max(previous positions) + 1; a chunk may begin with a whole video."""
    model = models[family]
    prepared = model.prepare(video=random_video(34), prompt=PROMPT)
    tokens = prepared.tokens
    split = {"video_start": prepared.layout.segments["video"].start,
             "after_video": prepared.layout.segments["after_video"].start + 2}[split_at]
    with torch.no_grad():
        model.cfg.attn_implementation = "eager"
        try:
            full = model(tokens)
            cache = KeyValueCache.empty(model.cfg.n_layers)
            first = model(tokens[:, :split], past_kv_cache=cache)
            rest = model(tokens[:, split:], past_kv_cache=cache)
        finally:
            model.cfg.attn_implementation = "auto"
    assert (torch.cat([first, rest], dim=1) - full).abs().max() <= FUSED_VS_EAGER_FP32


def test_a_cache_split_inside_a_video_is_refused(models):
    model = models["qwen2_5_vl"]
    prepared = model.prepare(video=random_video(35), prompt=PROMPT)
    split = prepared.layout.segments["video"].start + 3
    cache = KeyValueCache.empty(model.cfg.n_layers)
    with torch.no_grad():
        model(prepared.tokens[:, :split], past_kv_cache=cache)
        with pytest.raises(ValueError, match="ends inside a video"):
            model(prepared.tokens[:, split:], past_kv_cache=cache)


def test_frequency_rows_chunked_and_interleaved():
    t, h, w = 0, 1, 2
    assert mrope_axis_of_frequency((2, 3, 3), False, 8).tolist() == [t, t, h, h, h, w, w, w]
    assert mrope_axis_of_frequency((4, 2, 2), True, 8).tolist() == [t, h, w, t, h, w, t, t]
    with pytest.raises(ValueError, match="sums to"):
        mrope_axis_of_frequency((2, 3, 2), False, 8)


HF_ROTARY = {
    "qwen2_5_vl": (Qwen2_5_VLConfig, qwen2_5_vl_config_fields, Qwen2_5_VLRotaryEmbedding, {"mrope_section": [16, 24, 24]}),
    "qwen3_vl": (Qwen3VLConfig, qwen3_vl_config_fields, Qwen3VLTextRotaryEmbedding,
                 {"mrope_section": [24, 20, 20], "mrope_interleaved": True}),
}


@pytest.mark.parametrize("family", list(HF_ROTARY))
def test_rotary_matches_hf_at_the_real_mrope_sections(family):
    """head_dim 128 as in the 7B/8B checkpoints; distinct t, h, w rows so a wrong row shows."""
    config_class, config_fields, hf_rotary_class, mrope = HF_ROTARY[family]
    text_config = {
        "hidden_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 128,
        "num_hidden_layers": 1, "intermediate_size": 64, "vocab_size": 32,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, **mrope},
    }
    hf_config = config_class(text_config=text_config)
    ours = RotaryEmbedding(VideoTransformerConfig(**config_fields(hf_config)))
    hf_rotary = hf_rotary_class(hf_config.text_config)
    positions = torch.stack([torch.randint(0, 5000, (2, 11)), torch.randint(0, 50, (2, 11)), torch.randint(0, 50, (2, 11))])
    cos, sin = ours(positions, torch.float32)
    hf_cos, hf_sin = hf_rotary(torch.zeros(1, dtype=torch.float32), positions)
    assert (cos - hf_cos).abs().max() <= EXACT and (sin - hf_sin).abs().max() <= EXACT
