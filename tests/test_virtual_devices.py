"""The CPU simulator of several CUDA devices: torch's device rules, real values, module moves, a hooked model."""

from __future__ import annotations

import copy

import numpy
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tl_video.model.config import VideoTransformerConfig
from tl_video.model.hooked_video_transformer import HookedVideoTransformer
from tl_video.testing.virtual_devices import VirtualDeviceTensor, real, virtual_cuda_devices

SAME_DEVICE = "Expected all tensors to be on the same device"


def tiny_model() -> HookedVideoTransformer:
    """A 4-layer backbone with O(1) random weights (its constructor leaves them uninitialised)."""
    torch.manual_seed(0)
    cfg = VideoTransformerConfig(d_model=64, d_head=16, n_layers=4, n_ctx=512, n_heads=4, d_mlp=128, d_vocab=100)
    model = HookedVideoTransformer(cfg).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim > 1:
                parameter.normal_(0.0, parameter.shape[-1] ** -0.5)
            else:
                parameter.uniform_(0.5, 1.5)
    return model


# ---------------------------------------------------------------- torch's device rules


def test_mixing_two_virtual_devices_raises_torchs_error():
    with virtual_cuda_devices(2) as (gpu0, gpu1):
        x, y = torch.ones(3, device=gpu0), torch.ones(3, device=gpu1)
        with pytest.raises(RuntimeError, match=f"{SAME_DEVICE}.*cuda:0 and cuda:1"):
            x + y
        with pytest.raises(RuntimeError, match=SAME_DEVICE):
            torch.cat([x, y])
        with pytest.raises(RuntimeError, match=SAME_DEVICE):
            torch.ones(3, 3, device=gpu0) @ torch.ones(3, 3, device=gpu1)


def test_mixing_cpu_and_virtual_cuda_raises_but_a_0_dim_cpu_scalar_is_allowed():
    with virtual_cuda_devices(1) as (gpu0,):
        x = torch.arange(3.0, device=gpu0)
        with pytest.raises(RuntimeError, match=f"{SAME_DEVICE}.*cpu and cuda:0"):
            x + torch.ones(3)
        with pytest.raises(RuntimeError, match=SAME_DEVICE):
            x.index_select(0, torch.tensor([0]))  # index_select, unlike x[...], wants its index on x's device
        scaled = x * torch.tensor(2.0)  # a 0-dim CPU tensor is a scalar for element-wise CUDA kernels
        assert scaled.device == gpu0 and real(scaled).tolist() == [0.0, 2.0, 4.0]
        assert x[torch.tensor([2, 0])].tolist() == [2.0, 0.0]  # CPU indices are moved by advanced indexing


def test_index_on_another_virtual_device_raises():
    with virtual_cuda_devices(2) as (gpu0, gpu1):
        with pytest.raises(RuntimeError, match="indices should be either on cpu or on the same device"):
            torch.ones(3, device=gpu0)[torch.tensor([0], device=gpu1)]


def test_a_module_on_one_device_called_on_input_on_another_raises():
    """The bug the simulator exists to catch: a missing `.to(device)` between pipeline stages."""
    with virtual_cuda_devices(2) as (gpu0, gpu1):
        layer = nn.Linear(4, 4).to(gpu1)
        with pytest.raises(RuntimeError, match=f"{SAME_DEVICE}.*cuda:0 and cuda:1"):
            layer(torch.ones(2, 4, device=gpu0))
        assert layer(torch.ones(2, 4, device=gpu0).to(gpu1)).device == gpu1


def test_unknown_device_index_raises():
    with virtual_cuda_devices(2):
        with pytest.raises(RuntimeError, match="invalid device ordinal"):
            torch.zeros(1, device="cuda:2")
    with pytest.raises(ValueError, match="positive int"):
        with virtual_cuda_devices(0):
            pass


# ---------------------------------------------------------------- values and moves


def test_small_mlp_and_attention_on_cuda_1_equal_cpu():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
    x = torch.randn(2, 5, 8)
    q, k, v = torch.randn(3, 2, 4, 5, 8).unbind(0)
    rotary_angles = torch.arange(5.0)[:, None] * torch.ones(8)
    with torch.no_grad():
        expected_mlp = mlp(x)
        expected_attention = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        expected_scores = torch.einsum("bhqd,bhkd->bhqk", q, k).softmax(-1)
        expected_rotary = q * rotary_angles.cos() + k * rotary_angles.sin()
    with virtual_cuda_devices(2) as (_, gpu1), torch.no_grad():
        mlp.to(gpu1)
        qv, kv, vv = q.to(gpu1), k.to(gpu1), v.to(gpu1)
        angles = rotary_angles.to(gpu1)
        results = {
            "mlp": (mlp(x.to(gpu1)), expected_mlp),
            "sdpa": (F.scaled_dot_product_attention(qv, kv, vv, is_causal=True), expected_attention),
            "einsum-softmax": (torch.einsum("bhqd,bhkd->bhqk", qv, kv).softmax(-1), expected_scores),
            "rotary": (qv * angles.cos() + kv * angles.sin(), expected_rotary),
        }
        for name, (actual, expected) in results.items():
            assert isinstance(actual, VirtualDeviceTensor) and actual.device == gpu1, name
            assert torch.equal(real(actual), expected), name


def test_to_moves_between_devices_and_cpu_returns_a_plain_tensor():
    values = torch.arange(6.0).view(2, 3)
    with virtual_cuda_devices(2) as (gpu0, gpu1):
        on0 = values.to("cuda:0")
        on1 = on0.to("cuda:1")
        assert (on0.device, on1.device) == (gpu0, gpu1)
        assert on0.is_cuda and on0.get_device() == 0
        assert on1.to(gpu1) is on1  # a no-op move returns the tensor itself, as in torch
        back = on1.cpu()
        assert type(back) is torch.Tensor and back.device == torch.device("cpu")
        assert torch.equal(back, values)
        assert values.cuda(1).device == gpu1 and values.cuda().device == gpu0
        assert on1.to(torch.float64).device == gpu1
        with pytest.raises(TypeError, match="can't convert cuda:1 device type tensor to numpy"):
            on1.numpy()
        with pytest.raises(TypeError, match="can't convert cuda:1 device type tensor to numpy"):
            numpy.asarray(on1)
        assert "device='cuda:1'" in repr(on1)


def test_in_place_writes_through_views_and_in_place_ops_return_the_same_tensor():
    with virtual_cuda_devices(1) as (gpu0,):
        x = torch.arange(6.0, device=gpu0).view(2, 3)
        column = x[:, 1]
        column.zero_()  # a write through a view is seen by its base
        x[:, 2] = 7  # __setitem__
        x.t()[0] += 100  # a write through a transposed view
        assert x.tolist() == [[100.0, 0.0, 7.0], [103.0, 0.0, 7.0]]
        assert x.add_(1) is x and x.masked_fill_(x > 100, -1.0) is x
        assert x.copy_(torch.zeros(2, 3)) is x  # copy_ copies across devices, as in torch
        assert float(x.abs().sum()) == 0.0
        x[x == 0] = 2.0  # boolean-mask assignment (index_put_)
        assert x.view(-1).tolist() == [2.0] * 6 and x.view(-1).device == gpu0
        with pytest.raises(NotImplementedError, match="use the out-of-place form"):
            x.unsqueeze_(0)  # a wrapper cannot follow an in-place change of its own shape


def test_factory_functions_with_a_cuda_device_make_virtual_tensors():
    with virtual_cuda_devices(2) as (gpu0, gpu1):
        made = {
            "zeros": torch.zeros(2, 3, device=gpu1),
            "ones": torch.ones(2, device="cuda:1"),
            "arange": torch.arange(4, device=gpu1),
            "full": torch.full((2,), 3.0, device=gpu1),
            "randn": torch.randn(2, device=gpu1),
            "empty": torch.empty(2, device=gpu1),
            "tensor": torch.tensor([1, 2], device=gpu1),
            "as_tensor": torch.as_tensor([1.0, 2.0], device=gpu1),
            "zeros_like": torch.zeros_like(torch.ones(2, device=gpu1)),
            "new_zeros": torch.ones(2, device=gpu1).new_zeros(3),
        }
        for name, tensor in made.items():
            assert isinstance(tensor, VirtualDeviceTensor) and tensor.device == gpu1, name
        assert made["arange"].tolist() == [0, 1, 2, 3] and int(made["arange"].max()) == 3
        assert bool((made["tensor"] == 2).any()) and made["full"].sum().item() == 6.0
        assert torch.zeros(1, device="cuda").device == gpu0  # no index: the current device
        assert made["ones"].new_tensor([1.0]).device == gpu1 and made["ones"].new_tensor([1.0], device="cpu").device.type == "cpu"


def test_cuda_availability_is_simulated_inside_and_restored_outside():
    available, count = torch.cuda.is_available(), torch.cuda.device_count()
    with virtual_cuda_devices(3) as devices:
        assert devices == [torch.device("cuda", i) for i in range(3)]
        assert torch.cuda.is_available() and torch.cuda.device_count() == 3
        torch.cuda.set_device(2)
        assert torch.cuda.current_device() == 2 and torch.zeros(1, device="cuda").device == devices[2]
    assert (torch.cuda.is_available(), torch.cuda.device_count()) == (available, count)
    if not available:
        with pytest.raises(RuntimeError):
            torch.zeros(1, device="cuda:0")


def test_module_to_swaps_parameters_in_place_and_gradients_land_on_the_virtual_device():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    weight = layer.weight
    x = torch.randn(4, 3)
    layer(x).square().sum().backward()
    expected_grad = layer.weight.grad.clone()
    layer.zero_grad(set_to_none=True)
    with virtual_cuda_devices(2) as (_, gpu1):
        layer.to(gpu1)
        assert layer.weight is weight  # the same Parameter object, now on cuda:1
        assert all(isinstance(p, nn.Parameter) and p.device == gpu1 for p in layer.parameters())
        layer(x.to(gpu1)).square().sum().backward()
        assert layer.weight.grad.device == gpu1
        assert torch.equal(real(layer.weight.grad), expected_grad)
        clone = copy.deepcopy(layer)
        assert all(isinstance(p, nn.Parameter) and p.device == gpu1 for p in clone.parameters())
        layer.to(device="cuda:0", dtype=torch.float64)  # keyword device, and a cast on the way
        assert {(p.device, p.dtype) for p in layer.parameters()} == {(torch.device("cuda", 0), torch.float64)}
        layer.cpu()  # back to plain CPU parameters (and gradients), still the same objects
        assert layer.weight is weight and type(layer.weight.grad) is torch.Tensor
        assert all(type(p) is nn.Parameter and p.device.type == "cpu" for p in layer.parameters())


def test_gradient_hooks_run_during_backward_see_virtual_devices():
    """Hooks are Python code run inside backward(): they must see cuda:k and make tensors there (or on cpu)."""
    seen = []

    def hook(gradient):
        seen.append((gradient.device, torch.zeros(1).device, (gradient + torch.ones(2, device=gradient.device)).device))

    with virtual_cuda_devices(2) as (_, gpu1):
        x = torch.ones(2, device=gpu1, requires_grad=True)
        doubled = x * 2
        doubled.register_hook(hook)
        doubled.sum().backward()
        doubled = x * 2
        doubled.register_hook(hook)
        torch.autograd.grad(doubled.sum(), x)
    assert seen == [(gpu1, torch.device("cpu"), gpu1)] * 2


# ---------------------------------------------------------------- a real hooked model


@pytest.fixture(scope="module")
def model_and_reference():
    model = tiny_model()
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # plain forward: fused attention; with a cache: eager (hooks read the pattern)
        logits = model(tokens)
        cached_logits, cache = model.run_with_cache(tokens)
    return model, tokens, (logits, cached_logits), cache


def test_hooked_model_moved_to_cuda_1_gives_the_cpu_logits_and_cache(model_and_reference):
    """Same CPU kernels on the same values: the logits and every cached activation are bit-identical."""
    model, tokens, (expected_logits, expected_cached_logits), expected_cache = model_and_reference
    model = copy.deepcopy(model)
    with virtual_cuda_devices(2) as (_, gpu1), torch.no_grad():
        model.to("cuda:1")
        assert {p.device for p in model.parameters()} == {gpu1}
        logits = model(tokens)
        assert logits.device == gpu1 and torch.equal(real(logits), expected_logits)
        logits, cache = model.run_with_cache(tokens)
        assert torch.equal(real(logits), expected_cached_logits)
        assert set(cache.keys()) == set(expected_cache.keys())
        for name in expected_cache.keys():
            assert cache[name].device == gpu1, name
            assert torch.equal(real(cache[name]), expected_cache[name]), name


def test_hooked_model_split_over_three_devices_gives_the_cpu_logits_and_generation(model_and_reference):
    from tl_video.model.generation import greedy_generate
    from tl_video.model.placement import DevicePlacement

    model, tokens, (expected_logits, _), _ = model_and_reference
    expected_generation = greedy_generate(model, tokens, max_new_tokens=3)  # with the key/value cache
    model = copy.deepcopy(model)
    with virtual_cuda_devices(3) as devices, torch.no_grad():
        model.place(DevicePlacement.from_layer_counts(devices, [1, 2, 1]))
        assert [block.attn.W_Q.device for block in model.blocks] == [devices[0], devices[1], devices[1], devices[2]]
        logits = model(tokens)
        assert logits.device == devices[2] and torch.equal(real(logits), expected_logits)
        generated = greedy_generate(model, tokens, max_new_tokens=3)
        assert generated.device == devices[0] and torch.equal(real(generated), expected_generation)
        model.blocks[2].to(devices[0])  # a block moved behind the placement's back: a missing transfer
        with pytest.raises(RuntimeError, match=SAME_DEVICE):
            model(tokens)
