"""Bad token tensors, frames and numbers: a clear one-line error or a correct result, never a silent one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import random_video
from tl_video.data import VideoQAExample
from tl_video.model.config import resolve_dtype
from tl_video.prompts.prepare import prepare_example
from tl_video.video import write_video


@pytest.mark.parametrize("num_frames", [0, -2, 1.5, True, "8"])
def test_num_frames_must_be_a_positive_int(model, tmp_path, num_frames):
    path = write_video(tmp_path / "clip.mp4", random_video(0, frames=8, height=32, width=32), fps=8)
    for video in (path, random_video(0)):
        with pytest.raises(ValueError, match=rf"num_frames={num_frames!r} must be an int >= 1"):
            model.prepare(video=video, prompt="What happens?", num_frames=num_frames)
    example = VideoQAExample(example_id="x", video=str(path), question="What?", options=("a", "b"), answer_index=0)
    with pytest.raises(ValueError, match="num_frames=0 must be an int >= 1"):
        prepare_example(model, example, num_frames=0)


@pytest.mark.parametrize("shape", [(4, 3, 48, 3), (4, 40, 3, 3), (4, 2, 48, 3), (4, 1, 1, 3)])
def test_frames_too_small_to_tell_from_channels(model, shape):
    with pytest.raises(ValueError, match="too small to encode.*at least 4 px"):
        model.prepare(video=np.zeros(shape, dtype=np.uint8), prompt="What happens?")


def test_negative_stride_frames_are_copied(model):
    frames = random_video(3)
    reversed_view = model.prepare(video=frames[::-1], prompt="What happens?")
    reversed_copy = model.prepare(video=frames[::-1].copy(), prompt="What happens?")
    assert torch.equal(reversed_view.tokens, reversed_copy.tokens)
    assert reversed_view.frames.flags.c_contiguous
    torch.testing.assert_close(model(reversed_view.tokens), model(reversed_copy.tokens))


def test_left_padding_without_a_mask_is_refused_and_with_it_is_exact(model):
    tokens = model.to_tokens(["the cat sat on the mat", "hi"])
    assert model.tokenizer.pad_token_id in tokens[1].tolist()
    with pytest.raises(ValueError, match=r"row\(s\) \[1\].*left padding.*pass attention_mask="):
        model(tokens)
    mask = (tokens != model.tokenizer.pad_token_id).long()
    padded = model(tokens, attention_mask=mask)
    alone = model(model.to_tokens("hi"))
    torch.testing.assert_close(padded[1, -2:], alone[0], atol=1e-4, rtol=1e-4)
    model(model.to_tokens(["the cat sat on the mat", "hi"], padding_side="right"))  # right padding: real positions exact


@pytest.mark.parametrize(
    "tokens, error, message",
    [
        (torch.zeros(1, 0, dtype=torch.long), ValueError, r"empty token tensor \(shape \(1, 0\)\)"),
        (torch.zeros(0, 5, dtype=torch.long), ValueError, r"empty token tensor \(shape \(0, 5\)\)"),
        (torch.tensor([[1, 2, 3]], dtype=torch.uint8), TypeError, "dtype torch.uint8.*Pass ids as torch.long"),
        (torch.tensor([[True, False]]), TypeError, "dtype torch.bool.*boolean mask"),
        (torch.tensor([[1.0, 2.0]]), TypeError, "integer token ids.*torch.float32"),
        (np.array([[1, 2]]), TypeError, r"got ndarray int64; wrap it with torch.as_tensor"),
        ([[1, 2]], TypeError, "got list; wrap it"),
        (torch.ones(1, 2, 3, dtype=torch.long), ValueError, r"token ids \[batch, pos\], got shape \(1, 2, 3\)"),
    ],
)
def test_bad_token_tensors(model, tokens, error, message):
    with pytest.raises(error, match=message):
        model(tokens)


def test_int32_tokens_work_like_long(model):
    tokens = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(model(tokens.int()), model(tokens))


def test_start_at_layer_needs_a_residual_not_tokens(model):
    tokens = torch.tensor([[5, 6, 7]])
    with pytest.raises(TypeError, match=r"start_at_layer=1 the input is the residual stream.*torch.int64"):
        model(tokens, start_at_layer=1)
    with pytest.raises(ValueError, match=r"residual \[batch, pos, d_model=64\], got shape \(1, 3, 5\)"):
        model(torch.zeros(1, 3, 5), start_at_layer=1)
    residual = model(tokens, stop_at_layer=1)
    with pytest.raises(ValueError, match=r"tokens= \(1, 2\) must match"):
        model(residual, start_at_layer=1, tokens=tokens[:, :2])
    torch.testing.assert_close(model(residual.double(), start_at_layer=1), model(tokens))  # cast to the model's dtype


@pytest.mark.parametrize("layer, error", [(1.7, TypeError), (True, TypeError), ("1", TypeError), (9, ValueError)])
def test_layer_numbers_must_be_ints_in_range(model, layer, error):
    with pytest.raises(error, match=rf"stop_at_layer={layer!r}"):
        model(torch.tensor([[1, 2]]), stop_at_layer=layer)
    assert model(torch.tensor([[1, 2]]), stop_at_layer=np.int64(1)).shape[-1] == model.cfg.d_model


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(1, 2, dtype=torch.long), r"shape \(1, 2\); it must be \[batch, pos\] = \(1, 3\)"),
        (torch.full((1, 3), 2), "only 0 \\(padding\\) and 1"),
        (torch.ones(1, 3) * 0.5, "only 0 \\(padding\\) and 1"),
    ],
)
def test_bad_attention_masks(model, mask, message):
    with pytest.raises(ValueError, match=message):
        model(torch.tensor([[1, 2, 3]]), attention_mask=mask)


@pytest.mark.parametrize("dtype", ["float33", "int64", "Tensor", torch.int32, 3])
def test_unknown_dtype(dtype):
    with pytest.raises(ValueError, match=rf"dtype={dtype!r} is not a floating-point dtype; use one of"):
        resolve_dtype(dtype)


def test_dtype_names(tiny_checkpoint):
    assert resolve_dtype("bfloat16") is torch.bfloat16 and resolve_dtype("torch.float16") is torch.float16
    import tl_video

    with pytest.raises(ValueError, match="dtype='float33'"):
        tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoint, dtype="float33")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.integers(-3, 400), min_size=1, max_size=6),
    st.sampled_from([torch.long, torch.int32, torch.int16, torch.float16, torch.uint8, torch.bool]),
)
def test_property_any_token_tensor_runs_or_raises_a_clear_error(model, ids, dtype):
    """Random ids and dtypes: either a correct run (text ids in range) or one of our messages."""
    tokens = torch.tensor([ids]).to(dtype)
    valid = dtype in (torch.long, torch.int32, torch.int16) and all(0 <= i < model.cfg.d_vocab for i in ids)
    pad_first = ids[0] == model.tokenizer.pad_token_id
    if valid and not pad_first:
        torch.testing.assert_close(model(tokens), model(torch.tensor([ids])))
        return
    with pytest.raises((TypeError, ValueError)) as raised:
        model(tokens)
    message = str(raised.value)
    assert "\n" not in message
    assert any(
        text in message
        for text in ("out of range", "video bank", "dtype torch.", "integer token ids", "pad token", ">= 0")
    ), message


@pytest.mark.parametrize(
    "device, message",
    [("gpu", "device='gpu' is not a torch device"), ("cuda:99", "device='cuda:99'"), (3.5, "is not a torch device")],
)
def test_unknown_or_absent_device(tiny_checkpoint, device, message):
    import tl_video

    with pytest.raises(ValueError, match=message):
        tl_video.HookedVideoTransformer.from_pretrained(tiny_checkpoint, device=device)


def test_checkpoint_name_must_be_a_path_or_id():
    import tl_video

    with pytest.raises(TypeError, match="name_or_path must be a hub id or a folder path, got NoneType"):
        tl_video.HookedVideoTransformer.from_pretrained(None)


def test_to_tokens_refuses_unknown_padding_side_and_non_strings(model):
    with pytest.raises(ValueError, match="padding_side='middle'; expected 'left' or 'right'"):
        model.to_tokens(["a b c", "a"], padding_side="middle")
    with pytest.raises(TypeError, match=r"non-empty list of strings, got list \(empty\)"):
        model.to_tokens([])
    with pytest.raises(TypeError, match=r"got list \['str', 'int'\]"):
        model.to_tokens(["a", 3])


def test_residual_directions_of_video_or_out_of_range_ids(model):
    prepared = model.prepare(video=random_video(5), prompt="What happens?")
    video_id = int(prepared.tokens[0, prepared.layout.video_positions[0]])
    for ids in (video_id, [1, model.cfg.d_vocab], -1):
        with pytest.raises(ValueError, match=r"text token ids in \[0, 262\) \(video tokens have no unembedding\)"):
            model.tokens_to_residual_directions(ids)
    assert model.tokens_to_residual_directions(3).shape == (model.cfg.d_model,)


def test_non_finite_video_tokens_are_refused():
    from tl_video.model.video_bank import VideoBank

    bank = VideoBank(10, 2, torch.float16)
    with pytest.raises(ValueError, match="contain NaN or inf"):
        bank.register(torch.tensor([[1.0, float("nan")]]), torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize(
    "positions, error, message",
    [
        (torch.tensor([[0, 1]]), ValueError, r"position_ids has shape \(1, 2\); expected \[batch, pos\] with pos=3"),
        (torch.tensor([[0.0, 1.5, 2.0]]), TypeError, "position_ids must be integer positions.*torch.float32"),
    ],
)
def test_bad_position_ids(model, positions, error, message):
    with pytest.raises(error, match=message):
        model(torch.tensor([[1, 2, 3]]), position_ids=positions)
    torch.testing.assert_close(model(torch.tensor([[1, 2, 3]]), position_ids=torch.arange(3)[None]), model(torch.tensor([[1, 2, 3]])))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_moving_to_an_absent_gpu(model):
    with pytest.raises(ValueError, match="device='cuda'|device=device\\(type='cuda'\\).*CUDA is not available"):
        model.to("cuda")


@settings(max_examples=150, deadline=None)
@given(
    st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(0, 6), st.integers(1, 4)),
    st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]),
    st.booleans(),
    st.one_of(st.none(), st.integers(-1, 4)),
)
def test_property_load_frames_returns_valid_frames_or_one_clear_line(shape, dtype, reverse, num_frames):
    from tl_video.prompts.prepare import load_frames

    frames = np.zeros(shape, dtype=dtype)
    frames = frames[::-1] if reverse else frames
    try:
        loaded = load_frames(frames, num_frames)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert loaded.dtype == np.uint8 and loaded.flags.c_contiguous and loaded.shape[-1] == 3
    assert loaded.shape[0] >= 1 and min(loaded.shape[1:3]) >= 4
    assert num_frames is None or loaded.shape[0] == num_frames


def test_decoded_video_too_small_is_refused_like_an_array(model, tmp_path):
    path = write_video(tmp_path / "strip.mp4", np.zeros((4, 2, 16, 3), dtype=np.uint8), fps=4)
    with pytest.raises(ValueError, match="frames of 2x16 pixels .* too small to encode"):
        model.prepare(video=path, prompt="What happens?", num_frames=4)


def test_ragged_batch_without_a_pad_token_is_refused(model):
    tokenizer = model.tokenizer
    pad = tokenizer.pad_token
    tokenizer.pad_token = None
    try:
        assert tokenizer.pad_token_id is None
        with pytest.raises(ValueError, match="tokenizer has no pad token, so padding would use a real token id"):
            model.to_tokens(["the cat sat", "hi"])
        assert model.to_tokens(["hi", "ho"]).shape[0] == 2  # same length: nothing to pad
    finally:
        tokenizer.pad_token = pad
    assert tokenizer.pad_token_id is not None


def test_string_helpers_on_scalars_and_non_strings(model):
    assert model.to_str_tokens(3) == model.to_str_tokens([3]) and len(model.to_str_tokens(torch.tensor(3))) == 1
    assert model.to_string(3) == model.to_string([3])
    with pytest.raises(TypeError, match="to_single_token takes a string, got int 3"):
        model.to_single_token(3)
