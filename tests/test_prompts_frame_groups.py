"""VideoLLaMA3: each frame's "Time t s:" prefix and the "," before it belong to that frame's group.

The oracle follows the reference analyses, from the processor's ids alone: the video block lies
between the first two "\\n" tokens, frame 0 runs to the first ",", frame i from the (i-1)-th ","
up to the i-th. A cross-frame knockout in every layer then leaves no path from frame 0 to later
frames: their residual stream is unchanged when only frame 0's pixels change.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tl_video
from tl_video.interventions import knockout_hooks, preset
from tl_video.prompts import multiple_choice_prompt
from tl_video.testing import save_tiny_videollama3
from tests.conftest import random_video

N_FRAMES = 3


@pytest.fixture(scope="module")
def vl3(tmp_path_factory):
    folder = save_tiny_videollama3(tmp_path_factory.mktemp("vl3_groups") / "m", use_token_compression=False)
    return tl_video.HookedVideoTransformer.from_pretrained(folder)


def prepare(model, frames):
    return model.prepare(video=frames, prompt=multiple_choice_prompt("Which way?", ["left", "right"], 1),
                         answer_prefix="Best option:(")


def test_frame_groups_match_the_reference_split(vl3):
    frames = random_video(7, frames=N_FRAMES, height=24, width=24)
    prepared = prepare(vl3, frames)
    ids = vl3.processor(text=prepared.text, videos=[frames], return_tensors="pt")["input_ids"][0].tolist()
    newline, comma = (vl3.tokenizer.encode(c, add_special_tokens=False) for c in ("\n", ","))
    assert len(newline) == len(comma) == 1
    borders = [i for i, t in enumerate(ids) if t == newline[0]][:2]
    commas = [i for i, t in enumerate(ids) if t == comma[0] and borders[0] < i < borders[1]]
    assert len(commas) == N_FRAMES - 1
    starts = [borders[0] + 1, *commas]
    ends = [*commas, borders[1]]
    layout = prepared.layout
    for frame in range(N_FRAMES):
        assert layout.positions(f"frame[{frame}]").tolist() == list(range(starts[frame], ends[frame])), frame
        stamp = vl3.tokenizer.encode(f"Time {frame:.1f}s:", add_special_tokens=False)
        group = layout.positions(f"frame[{frame}]").tolist()
        assert [ids[p] for p in group[:len(stamp) + (frame > 0)]] == ([comma[0]] if frame else []) + stamp
    assert layout.positions("video").tolist() == list(range(borders[0] + 1, borders[1]))
    assert layout.positions("video_tokens").tolist() == list(layout.video_positions)
    assert set(layout.positions("text").tolist()) == set(range(layout.n_tokens)) - set(range(borders[0] + 1, borders[1]))
    assert layout.positions("frame[1:]").tolist() == list(range(starts[1], borders[1]))


def test_cross_frame_knockout_leaves_no_path_from_frame_0(vl3):
    """Before the fix, "Time 1.0s:" (in no group) read frame 0 and frame 1 read it back."""
    frames = random_video(8, frames=N_FRAMES, height=24, width=24)
    changed = frames.copy()
    changed[0] = random_video(9, frames=1, height=24, width=24)[0]
    a, b = prepare(vl3, frames), prepare(vl3, changed)
    a.layout.check_same_as(b.layout)
    n_layers = vl3.cfg.n_layers
    (spec,) = preset("cross-frame", a.layout, range(n_layers))
    later = a.layout.positions("frame[1:]")
    final = f"blocks.{n_layers - 1}.hook_resid_post"
    residuals = []
    for prepared in (a, b):
        with torch.no_grad(), vl3.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, n_layers)):
            _, cache = vl3.run_with_cache(prepared.tokens, names_filter=lambda name: name == final)
        residuals.append(cache[final][0, later])
    torch.testing.assert_close(residuals[0], residuals[1], rtol=0, atol=1e-5)
    with torch.no_grad():  # and without the knockout frame 0 does reach them (the test can fail)
        _, clean_a = vl3.run_with_cache(a.tokens, names_filter=lambda name: name == final)
        _, clean_b = vl3.run_with_cache(b.tokens, names_filter=lambda name: name == final)
    assert (clean_a[final][0, later] - clean_b[final][0, later]).abs().max() > 1e-3


def test_other_families_keep_pure_video_groups(model):
    prepared = model.prepare(video=random_video(10), prompt="What happens?")
    layout = prepared.layout
    assert layout.frame_text == ()
    assert layout.positions("video").tolist() == layout.positions("video_tokens").tolist() == list(layout.video_positions)
    for frame in range(layout.n_frames):
        assert layout.positions(f"frame[{frame}]").tolist() == layout.frame_positions(frame).tolist()


def test_lens_and_attention_maps_still_read_video_tokens_only(vl3):
    from tl_video.interventions import video_attention_map

    prepared = prepare(vl3, random_video(11, frames=N_FRAMES, height=24, width=24))
    maps = video_attention_map(vl3, prepared, "question", layers=[0])
    assert maps.shape[1:] == (N_FRAMES, 2, 2) and not torch.isnan(maps).any()
    assert np.isclose(float(maps.sum()), float(maps.sum()))
