"""Real video timing: `prepare` knows when frames were taken, and HF given the same `VideoMetadata` agrees.

Videos are written with `write_video` at a known frame rate and decoded by `read_video` (decord).
HF is fed the decoded frames plus a `VideoMetadata` built here independently: from decord's own
reader (frame count, average fps) and the segment-midpoint indices computed by hand, or stated
literally for a bare frame array. Compared: the prompt tokens (timestamp text included), Qwen's
M-RoPE positions (against the Qwen reference rule; HF's own `get_rope_index` where it follows it,
docs/families.md §4) and the logits.

Rates: 4 fps (12 frames, 4 sampled: 1.33 sampled fps, 1.5 s per Qwen2.5-VL tubelet) and 1.5 fps
(12 frames, 4 sampled: 0.5 sampled fps, 4 s per tubelet, where transformers 5.24's Qwen2.5-VL
positions deviate and HF gets the reference positions explicitly), and non-uniform indices.
"""

from __future__ import annotations

import decord
import numpy as np
import pytest
import torch
from transformers.video_utils import VideoMetadata

from tests.conftest import random_video
from tests.oracles import assert_same_prompt, hf_chat_inputs, max_diff
from tests.parity import PROMPT, load_pair
from tests.test_mrope_positions import SPLIT_TUBELETS, reference_positions
from tests.tolerances import LOGITS_FP32
from tl_video.testing import save_tiny_llava_next_video, save_tiny_qwen2_5_vl, save_tiny_qwen3_vl, save_tiny_videollama3
from tl_video.video import read_video, reverse, segment_midpoint_indices, write_video

BUILDERS = {"qwen2_5_vl": save_tiny_qwen2_5_vl, "qwen3_vl": save_tiny_qwen3_vl, "videollama3": save_tiny_videollama3}
FRAME_SIZE = {"qwen2_5_vl": (40, 48), "qwen3_vl": (40, 48), "videollama3": (36, 48)}
FAMILIES = list(BUILDERS)
RATES = [4.0, 1.5]
SOURCE_FRAMES, SAMPLED = 12, 4
# Non-uniform source indices of a bare 6-frame array at 4 fps; its window is 6 mean steps
# (round(6 * 17 / 5) = 20 frames), so HF's `total_num_frames` is 20.
UNEVEN_INDICES, UNEVEN_FPS, UNEVEN_WINDOW = [0, 1, 4, 9, 10, 17], 4.0, 20
MEASURED: dict[str, float] = {}  # "family @ case" -> max |logits - HF|, printed by the last test


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("timing")
    return {family: load_pair(builder(root / family)) for family, builder in BUILDERS.items()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """(family, fps) -> a real mp4 of 12 random frames at that rate, in the family's frame size."""
    root = tmp_path_factory.mktemp("timing_clips")
    written = {}
    for family, (height, width) in FRAME_SIZE.items():
        for index, fps in enumerate(RATES):
            frames = random_video(100 + index, frames=SOURCE_FRAMES, height=height, width=width)
            written[family, fps] = write_video(root / f"{family}_{fps}.mp4", frames, fps)
    return written


def decord_metadata(path) -> VideoMetadata:
    """What HF's own decord loader reports for the file, with the midpoint indices of 4 samples."""
    reader = decord.VideoReader(str(path))
    count, fps = len(reader), float(reader.get_avg_fps())
    indices = segment_midpoint_indices(count, fps, SAMPLED).tolist()
    return VideoMetadata(total_num_frames=count, fps=fps, frames_indices=indices)


def hf_reference(model, hf, processor, frames, metadata: VideoMetadata):
    """HF's inputs from the raw frames + metadata; the Qwen reference positions where 5.24's own deviate."""
    processed = hf_chat_inputs(processor, frames, PROMPT, video_metadata=[metadata], do_sample_frames=False)
    family = model.cfg.family
    if family in SPLIT_TUBELETS:
        expected = reference_positions(
            processed["mm_token_type_ids"][0], processed["video_grid_thw"], processed.get("second_per_grid_ts"),
            getattr(hf.config.vision_config, "tokens_per_second", 1.0), SPLIT_TUBELETS[family],
        )
        hf_own, _ = hf.model.get_rope_index(
            processed["input_ids"], processed["mm_token_type_ids"], video_grid_thw=processed["video_grid_thw"],
            second_per_grid_ts=processed.get("second_per_grid_ts"),
        )
        if not torch.equal(hf_own[:, 0], expected):
            assert family == "qwen2_5_vl", f"{family}: HF's positions deviate from the reference rule"
            processed["position_ids"] = expected[:, None]
        processed["reference_positions"] = expected
    return processed


def check_parity(model, hf, processor, prepared, metadata: VideoMetadata, case: str) -> dict:
    processed = hf_reference(model, hf, processor, prepared.frames, metadata)
    assert_same_prompt(prepared.tokens, processed["input_ids"], model.frontend.video_token_id)
    expected = processed.pop("reference_positions", None)
    if expected is not None:
        tokens = prepared.tokens
        ours = model.position_ids(tokens, None, None, 1, tokens.shape[1], tokens.device)[:, 0]
        assert torch.equal(ours, expected), f"{case}: M-RoPE positions differ from the reference rule"
    with torch.no_grad():
        reference = hf(**processed).logits
        logits = model(prepared.tokens)
    diff = max_diff(logits, reference)
    note = " (HF 5.24 positions deviate; given the reference ones)" if "position_ids" in processed else ""
    MEASURED[f"{model.cfg.family} @ {case}{note}"] = diff
    assert diff <= LOGITS_FP32, f"{case}: logits differ from HF by {diff:.2e}"
    return processed


def hf_text(processor, processed) -> str:
    return processor.tokenizer.decode(processed["input_ids"][0])


@pytest.mark.parametrize("fps", RATES)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_decoded_file_passes_its_timing_and_matches_hf(pairs, clips, family, fps):
    model, hf, processor = pairs[family]
    path = clips[family, fps]
    prepared = model.prepare(video=path, prompt=PROMPT, num_frames=SAMPLED)
    metadata = decord_metadata(path)
    timing = prepared.timing
    assert (timing.source, timing.fps, list(timing.frame_indices)) == ("decoded", fps, metadata.frames_indices)
    assert np.array_equal(prepared.frames, read_video(path, num_frames=SAMPLED).frames)
    processed = check_parity(model, hf, processor, prepared, metadata, f"{fps:g} fps file")

    indices = metadata.frames_indices  # 4 fps: [1, 4, 7, 10]; 1.5 fps: the same indices, slower
    assert indices == [1, 4, 7, 10]
    text = hf_text(processor, processed)
    if family == "qwen2_5_vl":  # 2 frames per tubelet / (4 of 12 frames at fps) per second
        assert processed["second_per_grid_ts"].tolist() == pytest.approx([2 / (SAMPLED / SOURCE_FRAMES * fps)])
    elif family == "qwen3_vl":  # one stamp per tubelet: the mean time of its two frames
        for first, second in zip(indices[::2], indices[1::2]):
            assert f"<{(first + second) / 2 / fps:.1f} seconds>" in text
    else:
        for index in indices:
            assert f"Time {index / fps:.1f}s:" in text


@pytest.mark.parametrize("family", FAMILIES)
def test_a_decoded_window_with_an_odd_frame_count_matches_hf(pairs, clips, family):
    """5 frames of [0.5, 2.75] s at 4 fps: midpoints 0.725 + 0.45 k s -> indices 2, 4, ..., 10 of a 9-frame window."""
    model, hf, processor = pairs[family]
    decoded = read_video(clips[family, 4.0], num_frames=5, start=0.5, end=2.75)
    prepared = model.prepare(video=decoded, prompt=PROMPT)
    assert prepared.timing == decoded.timing and prepared.timing.window_frames == 9
    metadata = VideoMetadata(total_num_frames=9, fps=4.0, frames_indices=[2, 4, 6, 8, 10])
    processed = check_parity(model, hf, processor, prepared, metadata, "4 fps window, 5 frames")
    if family == "qwen3_vl":  # the last tubelet repeats frame 10: (10 + 10) / 2 / 4 = 2.5 s
        assert "<0.8 seconds>" in hf_text(processor, processed) and "<2.5 seconds>" in hf_text(processor, processed)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_bare_array_with_fps_and_uneven_indices_matches_hf(pairs, family):
    model, hf, processor = pairs[family]
    height, width = FRAME_SIZE[family]
    frames = random_video(7, frames=len(UNEVEN_INDICES), height=height, width=width)
    prepared = model.prepare(video=frames, prompt=PROMPT, fps=UNEVEN_FPS, frame_indices=UNEVEN_INDICES)
    assert prepared.timing.source == "given" and prepared.timing.window_frames == UNEVEN_WINDOW
    metadata = VideoMetadata(total_num_frames=UNEVEN_WINDOW, fps=UNEVEN_FPS, frames_indices=list(UNEVEN_INDICES))
    processed = check_parity(model, hf, processor, prepared, metadata, "4 fps uneven indices")
    text = hf_text(processor, processed)
    if family == "qwen3_vl":
        assert "<0.1 seconds>" in text and "<1.6 seconds>" in text and "<3.4 seconds>" in text
    elif family == "videollama3":
        assert [f"Time {i / UNEVEN_FPS:.1f}s:" in text for i in UNEVEN_INDICES] == [True] * 6


@pytest.mark.parametrize("family", FAMILIES)
def test_a_bare_array_with_fps_only_is_consecutive_frames_at_that_rate(pairs, family):
    model, hf, processor = pairs[family]
    height, width = FRAME_SIZE[family]
    frames = random_video(8, frames=4, height=height, width=width)
    prepared = model.prepare(video=frames, prompt=PROMPT, fps=1.5)
    assert prepared.timing.frame_indices == (0, 1, 2, 3) and prepared.timing.window_frames == 4
    metadata = VideoMetadata(total_num_frames=4, fps=1.5, frames_indices=[0, 1, 2, 3])
    check_parity(model, hf, processor, prepared, metadata, "1.5 fps array")


@pytest.mark.parametrize("family", FAMILIES)
def test_without_fps_a_timestamped_family_records_its_processors_default(pairs, family):
    model = pairs[family][0]
    height, width = FRAME_SIZE[family]
    frames = random_video(9, frames=4, height=height, width=width)
    assumed = model.prepare(video=frames, prompt=PROMPT)
    stated = model.prepare(video=frames, prompt=PROMPT, fps=model.frontend.default_fps)
    assert assumed.timing.assumed and assumed.timing.fps == {"videollama3": 1.0}.get(family, 24.0)
    assert "processor default" in repr(assumed)
    assert torch.equal(assumed.tokens, stated.tokens)  # the record is exactly what the processor did
    faster = model.prepare(video=frames, prompt=PROMPT, fps=model.frontend.default_fps * 3)
    assert not torch.equal(assumed.tokens, faster.tokens)  # timing is not ignored


def test_a_corrupted_copy_keeps_the_clean_timing(pairs, clips):
    model = pairs["qwen3_vl"][0]
    clean = model.prepare(video=clips["qwen3_vl", 1.5], prompt=PROMPT, num_frames=SAMPLED)
    corrupted = model.prepare(video=reverse(clean.frames), prompt=PROMPT, timing=clean.timing)
    clean.layout.check_same_as(corrupted.layout)
    text = ~torch.isin(torch.arange(clean.tokens.shape[1]), clean.layout.positions("video_tokens"))
    assert torch.equal(clean.tokens[0, text], corrupted.tokens[0, text])  # the same timestamps
    untimed = model.prepare(video=reverse(clean.frames), prompt=PROMPT)
    assert untimed.tokens.shape != clean.tokens.shape or not torch.equal(untimed.tokens[0, text], clean.tokens[0, text])


def test_prepare_example_decodes_with_timing(pairs, clips):
    from tl_video.data import VideoQAExample
    from tl_video.prompts import prepare_example

    model = pairs["videollama3"][0]
    video = str(clips["videollama3", 4.0])
    example = VideoQAExample(example_id="x", video=video, question="Which?", options=("a", "b"), answer_index=0)
    prepared = prepare_example(model, example, num_frames=SAMPLED)
    assert prepared.timing.source == "decoded" and prepared.timing.fps == 4.0


def test_the_patching_pipeline_times_the_corrupted_copy_like_the_clean_video(pairs, clips, tmp_path):
    """run_patching's corrupted input carries the clean video's timestamps, not the processor's 1 fps."""
    from tl_video.analyses.patching import PatchingOptions, run_patching
    from tl_video.analyses.scoring import score_example
    from tl_video.data import VideoQAExample
    from tl_video.prompts import prepare_example

    model = pairs["videollama3"][0]
    video = str(clips["videollama3", 4.0])
    example = VideoQAExample(example_id="t", video=video, question="Which?", options=("a", "b", "c"), answer_index=0)
    options = PatchingOptions(corruptions=({"name": "reverse"},), layers=(0,), samples="all", min_gap=0.0)
    record = run_patching(model, [example], options, out_dir=tmp_path, progress=False).patching_records("reverse")[0]
    scored = score_example(model, example, options)
    timed = prepare_example(model, example, video=reverse(scored.prepared.frames), timing=scored.prepared.timing)
    untimed = prepare_example(model, example, video=reverse(scored.prepared.frames))
    clean_token, corrupted_token = (scored.letters[record[f"{kind}_letter"]] for kind in ("clean", "corrupted"))

    def metric(prepared) -> float:
        with torch.no_grad():
            logits = model(prepared.tokens)[0, -1]
        return float(logits[clean_token] - logits[corrupted_token])

    assert record["corrupted_metric"] == pytest.approx(metric(timed), abs=1e-5)
    assert metric(untimed) != pytest.approx(metric(timed), abs=1e-5)


def test_untimed_families_accept_and_record_fps(tmp_path):
    model, _, _ = load_pair(save_tiny_llava_next_video(tmp_path / "llava"))
    frames = random_video(10)
    plain = model.prepare(video=frames, prompt=PROMPT)
    timed = model.prepare(video=frames, prompt=PROMPT, fps=2.0, frame_indices=[0, 2, 4, 6])
    assert plain.timing is None and timed.timing.fps == 2.0
    tensor_indices = model.prepare(video=frames, prompt=PROMPT, fps=2.0, frame_indices=torch.tensor([0, 2, 4, 6]))
    assert tensor_indices.timing == timed.timing
    assert torch.equal(plain.tokens, timed.tokens)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"fps": 0}, "fps=0 must be a positive finite number"),
        ({"fps": -2.0}, "fps=-2.0 must be a positive finite number"),
        ({"fps": float("nan")}, "fps=nan must be a positive finite number"),
        ({"fps": float("inf")}, "fps=inf must be"),
        ({"fps": "25"}, "fps='25' must be"),
        ({"fps": True}, "fps=True must be"),
        ({"fps": 2, "frame_indices": [0, 1, 2]}, "frame_indices has 3 entries but the video has 4 frames"),
        ({"fps": 2, "frame_indices": [0, 1, -2, 3]}, "frame_indices must be >= 0"),
        ({"fps": 2, "frame_indices": [0, 5, 3, 8]}, "frame 2 \\(3\\) comes after 5"),
        ({"fps": 2, "frame_indices": [0, 1.5, 2, 3]}, "frame_indices must hold ints"),
        ({"fps": 2, "frame_indices": "0123"}, "frame_indices must be a list of ints"),
        ({"fps": 2, "frame_indices": np.zeros((2, 2), dtype=int)}, "frame_indices must be one-dimensional"),
        ({"frame_indices": [0, 1, 2, 3]}, "frame_indices= needs fps= as well"),
        ({"fps": 2, "timing": "x"}, "pass either timing= or fps="),
        ({"timing": 2.0}, "timing= must be a VideoTiming"),
    ],
)
def test_bad_timing_arguments_are_one_clear_error(pairs, kwargs, match):
    model = pairs["qwen3_vl"][0]
    with pytest.raises((ValueError, TypeError), match=match) as error:
        model.prepare(video=random_video(11), prompt=PROMPT, **kwargs)
    assert "\n" not in str(error.value)


def test_a_file_keeps_its_own_timing_and_timings_must_fit(pairs, clips):
    model = pairs["qwen3_vl"][0]
    path = clips["qwen3_vl", 4.0]
    with pytest.raises(ValueError, match="fps= is for frame arrays, but a decoded video file carries its own timing"):
        model.prepare(video=path, prompt=PROMPT, fps=30)
    clean = model.prepare(video=path, prompt=PROMPT, num_frames=SAMPLED)
    with pytest.raises(ValueError, match="timing= times 4 frames but the video has 6"):
        model.prepare(video=random_video(12, frames=6), prompt=PROMPT, timing=clean.timing)


def test_report_parity(pairs):
    """Prints the measured logit differences (run with -s); the parity tests above assert them."""
    for case, diff in sorted(MEASURED.items()):
        print(f"{case}: max |logits - HF| = {diff:.2e}")


def test_patching_refuses_inputs_whose_text_differs(pairs):
    """Timestamps from another frame rate keep the layout but change the text: patching must refuse."""
    from tl_video.interventions.patching import patch_frames

    model = pairs["videollama3"][0]
    frames = random_video(8)
    clean = model.prepare(video=frames, prompt=PROMPT, fps=1.0)
    slower = model.prepare(video=frames[::-1].copy(), prompt=PROMPT, fps=0.5)
    clean.layout.check_same_as(slower.layout)  # the layouts alone cannot tell them apart
    with pytest.raises(ValueError, match=r"differ in their text.*timing=clean.timing"):
        clean.check_same_as(slower)
    _, cache = model.run_with_cache(clean.tokens)
    with pytest.raises(ValueError, match="differ in their text"):
        patch_frames(model, clean, slower, cache, lambda logits: logits[:, -1, 0], progress=False)
    clean.check_same_as(model.prepare(video=frames[::-1].copy(), prompt=PROMPT, timing=clean.timing))
