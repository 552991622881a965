"""video + prompt -> PreparedInput: frames -> processor -> front end -> video bank -> token ids."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tl_video.model.video_bank import content_key
from tl_video.prompts.alignment import placeholder_run, token_spans
from tl_video.prompts.layout import layout_from_tokens
from tl_video.prompts.prepared import PreparedInput
from tl_video.prompts.paper import check_prompt_style, paper_multiple_choice_prompt, render_paper_prompt
from tl_video.prompts.prompt_text import MC_ANSWER_PREFIX, PromptText, multiple_choice_prompt, plain_prompt
from tl_video.prompts.render import render_prompt
from tl_video.video.decode import DecodedVideo
from tl_video.video.timing import VideoTiming, resolve_timing


class InputTooLongError(ValueError):
    """A prepared input holds more tokens than the model's context (a study records the example as skipped)."""

if TYPE_CHECKING:
    from tl_video.model.hooked_video_transformer import HookedVideoTransformer

DEFAULT_NUM_FRAMES = 8


MIN_FRAME_SIDE = 4  # a side of 1 or 3 px is taken for the colour channels by HF image processors


def check_num_frames(num_frames: Any) -> int | None:
    """`num_frames` as an int >= 1, or None (the default); anything else is an error, never 8 frames."""
    if num_frames is None:
        return None
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames={num_frames!r} must be an int >= 1 (or None for {DEFAULT_NUM_FRAMES})")
    return int(num_frames)


def load_frames(video: Any, num_frames: int | None) -> np.ndarray:
    """A path or file object is decoded (T frames at segment midpoints); arrays are checked.

    Arrays come back C-contiguous (a reversed view `frames[::-1]` is copied), as uint8 [T, H, W, 3].
    """
    return load_video(video, num_frames)[0]


def load_video(video: Any, num_frames: int | None) -> tuple[np.ndarray, VideoTiming | None]:
    """`load_frames`, plus the timing a decoded file (or a `DecodedVideo`) carries; None for an array."""
    num_frames = check_num_frames(num_frames)
    timing = None
    if isinstance(video, (str, Path)) or hasattr(video, "read"):
        from tl_video.video import read_video

        video = read_video(video, num_frames=DEFAULT_NUM_FRAMES if num_frames is None else num_frames)
    if isinstance(video, DecodedVideo):
        frames, timing = video.frames, video.timing
    else:
        frames = video.detach().cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"video frames must be uint8 [frames, height, width, 3] (RGB), got shape {frames.shape}; "
            "pass a file path to decode a video"
        )
    if frames.dtype != np.uint8:
        raise ValueError(
            f"video frames must be uint8 RGB in [0, 255], got dtype {frames.dtype}; convert pixel values "
            "with np.clip(frames, 0, 255).astype(np.uint8)"
        )
    if frames.shape[0] == 0:
        raise ValueError("the video has no frames")
    if min(frames.shape[1:3]) < MIN_FRAME_SIDE:
        raise ValueError(
            f"frames of {frames.shape[1]}x{frames.shape[2]} pixels (height x width) are too small to encode: "
            f"each side needs at least {MIN_FRAME_SIDE} px (image processors read a 1- or 3-px side as colour "
            "channels); resize the frames first"
        )
    if num_frames is not None and frames.shape[0] != num_frames:
        raise ValueError(f"expected {num_frames} frames (num_frames=), got {frames.shape[0]}")
    return np.ascontiguousarray(frames), timing


def prepare_input(
    model: "HookedVideoTransformer",
    *,
    video: Any,
    prompt: str | PromptText,
    num_frames: int | None = None,
    system: str | None = None,
    answer_prefix: str = "",
    use_chat_template: bool = True,
    prompt_style: str = "chat",
    fps: float | None = None,
    frame_indices: Any = None,
    timing: VideoTiming | None = None,
) -> PreparedInput:
    """Prepare one (video, prompt) pair for `model`; the video's tokens are added to its bank.

    Timing (when the frames were taken) reaches the families that use it: Qwen2.5-VL's M-RoPE time
    axis, Qwen3-VL's and VideoLLaMA3's per-frame timestamps. A video file (or a `DecodedVideo`)
    carries its own (source fps, sampled indices). A frame array takes `fps=` (the source video's
    frame rate) and optionally `frame_indices=` (each frame's source index; default 0..T-1), or
    `timing=` (e.g. `clean.timing` for a corrupted copy of the clean frames). Without any, a
    timestamped family gets its HF processor's default (`frontend.default_fps`: 24 for Qwen, 1 for
    VideoLLaMA3; consecutive frames), recorded as `PreparedInput.timing.source == "assumed"`.
    Families without timing (LLaVA-*, InternVL, PLLaVA) only record it.

    A `PromptText` (e.g. from `multiple_choice_prompt`) carries named spans that become layout
    segments (question, option[X], ...); a plain string is its own `question` segment;
    `answer_prefix` becomes the `answer_prompt` segment. `prompt_style="chat"` wraps the prompt in
    the checkpoint's chat template; `"paper"` writes the reference study's literal conversation for
    the family (`tl_video.prompts.paper`; build the user text with `paper_multiple_choice_prompt`).
    """
    frontend, processor = model.frontend, model.processor
    if frontend is None or processor is None:
        raise ValueError("this model has no video front end; load it with HookedVideoTransformer.from_pretrained")
    prompt_style = check_prompt_style(prompt_style)
    if isinstance(prompt, str):
        prompt = plain_prompt(prompt, frontend.video_placeholder)
    if not isinstance(prompt, PromptText):
        raise TypeError(f"prompt must be a string or a PromptText, got {type(prompt).__name__}")
    prompt.check_no_placeholder(frontend.video_placeholder)
    if not isinstance(answer_prefix, str):
        raise TypeError(f"answer_prefix must be a string (e.g. 'Best option:('), got {type(answer_prefix).__name__}")
    frames, decoded_timing = load_video(video, num_frames)
    timing = resolve_timing(
        len(frames), decoded=decoded_timing, fps=fps, frame_indices=frame_indices, timing=timing,
        default_fps=frontend.default_fps,
    )
    if prompt_style == "paper":
        text, system = render_paper_prompt(
            processor, prompt, frontend.family, frontend.video_placeholder, system=system, answer_prefix=answer_prefix
        )
    else:
        text = render_prompt(
            processor, prompt.text, frontend.video_placeholder,
            system=system, answer_prefix=answer_prefix, use_chat_template=use_chat_template,
        )
    char_spans = _character_spans(text, prompt, system, answer_prefix)
    if frontend.default_fps is not None and timing is not None and not timing.assumed:
        processed = frontend.process(processor, text, frames, timing=timing)
    else:  # the processor's own default is exactly the assumed timing recorded below
        processed = frontend.process(processor, text, frames)
    input_ids = processed["input_ids"][0]
    video_inputs = frontend.video_inputs(processed)
    frontend_device = model.placement.frontend  # the front end may have a device of its own
    features = frontend.encode(**{k: v.to(frontend_device) for k, v in video_inputs.items()})
    is_placeholder = input_ids == frontend.video_token_id
    n_placeholders, n_features = int(is_placeholder.sum()), features.embeddings.shape[0]
    if n_placeholders != n_features:
        raise ValueError(
            f"the processed prompt holds {n_placeholders} video placeholder tokens but the front end "
            f"produced {n_features} video tokens; the prompt has no room for the video as written"
        )
    if input_ids.shape[0] > model.cfg.n_ctx:
        raise InputTooLongError(
            f"the prepared input is {input_ids.shape[0]} tokens ({n_features} of them video) but the model's "
            f"context is {model.cfg.n_ctx}; use fewer frames (num_frames=) or a shorter prompt"
        )
    first_input, *other_inputs = video_inputs.values()  # other inputs (grids, timings) change the tokens too
    key = content_key(first_input, sorted(video_inputs), [value.tolist() for value in other_inputs])
    entry = model.video_bank.register(features.embeddings, features.grid, key, features.extras)
    tokens = input_ids.clone()
    tokens[is_placeholder] = entry.token_ids
    placeholder_id = processor.tokenizer.convert_tokens_to_ids(frontend.video_placeholder)
    segments = token_spans(processor.tokenizer, text, input_ids, placeholder_id, char_spans)
    layout = layout_from_tokens(
        tokens, is_placeholder, features.grid, frontend.frame_unit, segments, prompt.true_option, prompt.option_letters,
        video_run=placeholder_run(processor.tokenizer, text, input_ids, placeholder_id),
        inserted_text=getattr(frontend, "inserted_text", None),  # e.g. VideoLLaMA3's timestamps join their frame
    )
    return PreparedInput(
        tokens=tokens[None].to(model.cfg.device), layout=layout, text=text, frames=frames, prompt_style=prompt_style,
        timing=timing,
    )


def prepare_example(model: "HookedVideoTransformer", example: Any, **kwargs: Any) -> PreparedInput:
    """Prepare a `VideoQAExample`: multiple choice with the paper's prompt and "Best option:(".

    The video is decoded from `example.video` over [start, end], with its timing, unless `video=`
    frames are given (e.g. a corrupted copy: pass `timing=clean.timing` too, so a timestamped
    family sees the same times). Open-ended examples use the question as the prompt.
    `prompt_style="paper"` writes the reference code's literal text for the model's family
    (its instruction, spacing and answer prefix; none for VideoLLaMA3).
    """
    prompt_style = check_prompt_style(kwargs.get("prompt_style", "chat"))
    video = kwargs.pop("video", None)
    if video is None:
        from tl_video.video import read_video

        video = read_video(  # the DecodedVideo: its timing goes with the frames
            example.video, num_frames=check_num_frames(kwargs.pop("num_frames", None)) or DEFAULT_NUM_FRAMES,
            start=example.start, end=example.end,
        )
    if example.is_multiple_choice and prompt_style == "paper":
        prompt, answer_prefix = paper_multiple_choice_prompt(
            model.frontend.family, example.question, example.options, example.answer_index
        )
        kwargs.setdefault("answer_prefix", answer_prefix)
    elif example.is_multiple_choice:
        prompt = multiple_choice_prompt(example.question, example.options, example.answer_index)
        kwargs.setdefault("answer_prefix", MC_ANSWER_PREFIX)
    else:
        prompt = plain_prompt(example.question)
    return prepare_input(model, video=video, prompt=prompt, **kwargs)


def _character_spans(
    rendered: str, prompt: PromptText, system: str | None, answer_prefix: str
) -> dict[str, tuple[int, int]]:
    """Where the prompt's own spans, the system text and the answer prefix sit in the rendered text."""
    spans: dict[str, tuple[int, int]] = {}
    if prompt.spans:
        offset = _unique_offset(rendered, prompt.text, "prompt")
        spans.update({name: (offset + a, offset + b) for name, (a, b) in prompt.spans.items()})
    if system:
        offset = _unique_offset(rendered, system, "system text")
        spans["system"] = (offset, offset + len(system))
    if answer_prefix:
        spans["answer_prompt"] = (len(rendered) - len(answer_prefix), len(rendered))
    return spans


def _unique_offset(rendered: str, piece: str, what: str) -> int:
    count = rendered.count(piece)
    if count != 1:
        raise ValueError(
            f"the rendered prompt holds the {what} {count} times (expected once, verbatim), so its "
            "segments cannot be placed; write the prompt with the video placeholder yourself"
        )
    return rendered.index(piece)
