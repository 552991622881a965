"""Layer-wise placement of a model over several devices: the plan, its checks, and its forward.

The placement itself (`DevicePlacement`) is plain data and tested directly. Its forward is tested on
CPU (a split over one device must equal the unsplit model exactly) here, and over several simulated
CUDA devices in tests/test_placement_devices.py.
"""

from __future__ import annotations

import pytest
import torch

import tl_video
from tl_video.model.placement import DevicePlacement, _balanced_counts
from tl_video.testing import save_tiny_qwen3_vl
from tests.conftest import random_video
from tests.parity import PROMPT

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("block_bytes", "embed", "unembed", "n_devices", "expected"),
    [
        ([10] * 32, 0, 0, 2, [16, 16]),
        ([10] * 32, 6, 6, 2, [16, 16]),
        ([10] * 80, 14, 14, 4, [19, 21, 21, 19]),  # a 152k vocabulary weighs ~1.4 blocks at each end
        ([10] * 4, 0, 0, 4, [1, 1, 1, 1]),
        ([1] * 5, 100, 0, 2, [1, 4]),  # a huge embedding: the first device takes one block only
        ([5, 1, 1, 1, 5], 0, 0, 2, [2, 3]),
    ],
)
def test_balanced_split_minimises_the_largest_device(block_bytes, embed, unembed, n_devices, expected):
    counts = _balanced_counts(block_bytes, embed, unembed, n_devices)
    assert counts == expected
    assert all(count >= 1 for count in counts) and sum(counts) == len(block_bytes)


def test_balanced_split_is_optimal_against_every_contiguous_split():
    """Exhaustive check on small cases: no other split of 7 blocks over 3 devices has a smaller largest load."""
    import itertools

    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        sizes = torch.randint(1, 20, (7,), generator=generator).tolist()
        embed, unembed = torch.randint(0, 30, (2,), generator=generator).tolist()

        def largest(counts):
            loads, start = [], 0
            for device, count in enumerate(counts):
                extra = (embed if device == 0 else 0) + (unembed if device == 2 else 0)
                loads.append(sum(sizes[start:start + count]) + extra)
                start += count
            return max(loads)

        splits = [(a, b, 7 - a - b) for a, b in itertools.product(range(1, 6), repeat=2) if 7 - a - b >= 1]
        assert largest(_balanced_counts(sizes, embed, unembed, 3)) == min(largest(split) for split in splits)


def test_placement_from_counts_and_its_description():
    placement = DevicePlacement.from_layer_counts(["cpu"], [3])
    assert placement.blocks == (CPU,) * 3 and placement.embed == placement.unembed == placement.frontend == CPU
    assert placement.is_single_device and placement.devices == (CPU,)
    assert placement.describe() == "front end on cpu; embedding and layers 0-2 and unembedding on cpu"
    assert placement.to_json() == {"frontend": "cpu", "embed": "cpu", "unembed": "cpu", "blocks": ["cpu"] * 3}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: DevicePlacement.from_layer_counts(["cpu"], [2, 2]), "2 entries for 1 devices"),
        (lambda: DevicePlacement.from_layer_counts(["cpu"], [-1]), "non-negative integers"),
        (lambda: DevicePlacement.from_layer_counts(["cpu", "cpu"], [1, 1]), "more than once"),
        (lambda: DevicePlacement.from_layer_counts("cpu", [1]), "non-empty list"),
        (lambda: DevicePlacement.from_layer_counts(["cuda:0"], [1]), "CUDA is not available"),
        (lambda: DevicePlacement.balanced(["cpu"], [], 1, 1), "1 devices for a model with 0 layers"),
        (lambda: DevicePlacement(CPU, (), CPU, CPU), "at least one block"),
        (lambda: DevicePlacement.from_layer_counts(["gpu0"], [1]), "is not a torch device"),
    ],
)
def test_bad_placements_are_refused_with_the_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.fixture(scope="module")
def qwen3_folder(tmp_path_factory):
    return save_tiny_qwen3_vl(tmp_path_factory.mktemp("placement") / "qwen3_vl")  # deepstack: injections per layer


def test_a_split_over_one_device_equals_the_unsplit_model(qwen3_folder):
    plain = tl_video.HookedVideoTransformer.from_pretrained(qwen3_folder)
    placed = tl_video.HookedVideoTransformer.from_pretrained(
        qwen3_folder, devices=["cpu"], frontend_device="cpu", layers_per_device=[plain.cfg.n_layers]
    )
    video = random_video(3)
    expected, cache = plain.run_with_cache(plain.prepare(video, PROMPT).tokens)
    got, placed_cache = placed.run_with_cache(placed.prepare(video, PROMPT).tokens)
    assert torch.equal(got, expected)
    assert torch.equal(placed_cache["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_post"])
    assert placed.placement.is_single_device


def test_loading_refuses_conflicting_device_options(qwen3_folder):
    with pytest.raises(ValueError, match="device= for one device, or devices= to split"):
        tl_video.HookedVideoTransformer.from_pretrained(qwen3_folder, device="cpu", devices=["cpu"])
    with pytest.raises(ValueError, match="pass devices= too"):
        tl_video.HookedVideoTransformer.from_pretrained(qwen3_folder, layers_per_device=[2])
    with pytest.raises(ValueError, match="devices for 1 layers \\(layers_per_device sums to that\\); this model has"):
        tl_video.HookedVideoTransformer.from_pretrained(qwen3_folder, devices=["cpu"], layers_per_device=[1])
    with pytest.raises(ValueError, match="CUDA is not available"):
        tl_video.HookedVideoTransformer.from_pretrained(qwen3_folder, devices=["cuda:0", "cuda:1"])


def test_moving_the_model_to_one_device_forgets_the_split(qwen3_folder):
    model = tl_video.HookedVideoTransformer.from_pretrained(qwen3_folder, devices=["cpu"])
    assert model._placement is not None
    model.to(torch.float64)  # a dtype cast keeps the placement
    assert model._placement is not None and model.cfg.dtype == torch.float64
    model.to("cpu")
    assert model._placement is None and model.placement.is_single_device


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--devices", "cuda:0,cuda:1"], "--devices cuda:0: CUDA is not available here"),
        (["--frontend-device", "cuda:1"], "--frontend-device cuda:1: CUDA is not available here"),
        (["--device", "cpu", "--devices", "cpu"], "--device and --devices both given"),
        (["--devices", "cpu,cpu"], "--devices names cpu more than once"),
    ],
)
def test_the_command_line_refuses_bad_splits_in_one_line(capsys, tmp_path, options, message):
    from tl_video.cli import main

    code = main(["flow", "--out", str(tmp_path / "run"), "--n", "1", *options])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0], error


def test_last_position_logits_unembed_only_the_last_position(qwen3_folder):
    """The patching pipeline's memory saver: the same last-position logits, none of the others."""
    model = tl_video.HookedVideoTransformer.from_pretrained(qwen3_folder)
    tokens = model.prepare(random_video(4), PROMPT).tokens
    full = model(tokens)
    with model.last_position_logits():
        last = model(tokens)
        assert model(tokens, return_type="loss").ndim == 0  # the loss still reads every position
    assert last.shape == (1, 1, model.cfg.d_vocab)
    torch.testing.assert_close(last, full[:, -1:], rtol=0, atol=1e-5)  # a [1, d] matmul may round unlike [pos, d]
    assert model(tokens).shape == full.shape  # off again on exit
