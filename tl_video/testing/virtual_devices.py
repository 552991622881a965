"""A CPU simulator of several CUDA devices, for testing multi-device placement without a GPU.

The project's tests run on machines without GPUs, yet a model split over `cuda:0`, `cuda:1`, ...
must move its residual stream (and every mask, position and cache tensor) to the right device
at each layer boundary. Inside `virtual_cuda_devices(n)`, tensors can be placed on `cuda:0` ..
`cuda:{n-1}`: each is a `VirtualDeviceTensor` whose `.device` reports that device while its
values live in an ordinary CPU tensor, so every operation computes real values (data-dependent
code such as `int(tokens.min())`, `.any()` or `.item()` runs as usual) with the CPU kernels, giving
the same numbers as the same code on CPU. Every operation checks its tensor arguments the way CUDA
torch does: tensors on two devices (`cuda:0` and `cuda:1`, or `cpu` and `cuda:0`) raise torch's
"Expected all tensors to be on the same device" RuntimeError, so a missing `.to(device)` fails here
as it would on a real multi-GPU machine. As in torch, a 0-dim CPU tensor is accepted next to CUDA
tensors in element-wise operations, CPU index tensors in advanced indexing, and `copy_` (also
`x[...] = y`) copies across devices.

    with virtual_cuda_devices(2) as (gpu0, gpu1):
        model.to(gpu1)
        logits = model(tokens.to(gpu1))
        assert logits.device == gpu1
        values = real(logits)  # the CPU tensor holding the values

Inside the context `torch.cuda.is_available()` is True and `torch.cuda.device_count()` is `n`
(so code that validates devices accepts `cuda:k`), `torch.cuda.set_device` / `current_device` pick
what plain `"cuda"` means, and `torch.cuda.synchronize` does nothing; all are restored on exit.
Autograd works (gradients land on the parameters' virtual devices).

How: a virtual tensor is a tensor subclass that torch's C++ core sees as a CPU tensor (so no CUDA
runtime is ever touched); `__torch_function__` reports the virtual device to Python, and
`__torch_dispatch__` checks devices and runs each ATen operation on the wrapped CPU values.
A torch-function mode turns `device="cuda:k"` arguments and `.to` / `.cuda()` moves into virtual
tensors (and keeps hooks run by `backward()` / `torch.autograd.grad` simulated), and a dispatch mode
puts tensors that torch's C++ code creates from scratch inside a call (composite operations,
backward formulas) on the device of that call's first virtual argument.

Limits: only placement and values are simulated. There are no streams, events or asynchronous
execution, no memory accounting (`torch.cuda.memory_allocated` and friends are not simulated),
no CUDA kernels (CPU kernels run instead, so CUDA-only numerics such as TF32, fused CUDA attention
kernels, non-deterministic atomics or CUDA random streams are not reproduced), no `torch.compile`,
one thread. `numpy()` and storages of a virtual tensor are unavailable and `data_ptr()` returns 0
(use `real(t)` or `.cpu()`); in-place operations that change a tensor's shape or strides (`resize_`, `unsqueeze_`,
`t_`, ...) raise NotImplementedError; the body of a custom `torch.autograd.Function` sees virtual
tensors as CPU tensors; a backward formula that builds a tensor from scratch gets the loss's device,
which could raise a false device error in a model split over devices (not seen in this project's
analyses, which tests/test_placement_devices.py runs split over three virtual devices).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, redispatch_function
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

# VirtualDeviceTensor stays importable but out of `__all__`: pdoc cannot document a torch.Tensor subclass
# without warning (torch.Tensor annotates `_is_param` at run time only).
__all__ = ["real", "virtual_cuda_devices"]

_aten = torch.ops.aten
_CPU = torch.device("cpu")
Device = torch.device | str | int

# Operations that read a tensor on another device: they are the transfers themselves.
_TRANSFERS = {_aten._to_copy.default, _aten.copy_.default, _aten.copy.default}
# Advanced indexing moves CPU index tensors to the indexed tensor's device (torch's `make_info`).
_INDEXING = {
    _aten.index.Tensor,
    _aten.index_put.default,
    _aten.index_put_.default,
    _aten._index_put_impl_.default,
    _aten._unsafe_index.Tensor,
    _aten._unsafe_index_put.default,
}
# Operations without the pointwise tag that, like TensorIterator kernels, take a 0-dim CPU tensor as a scalar.
_SCALAR_FRIENDLY = {
    "masked_fill", "masked_fill_", "fill", "fill_", "index_put", "index_put_", "_index_put_impl_", "where",
}
# In-place operations that change a tensor's shape or strides, which a wrapper cannot follow.
_METADATA_MUTATIONS = {
    "resize_", "resize_as_", "as_strided_", "set_", "squeeze_", "unsqueeze_", "t_", "transpose_",
    "swapdims_", "swapaxes_",
}

_counts: list[int] = []  # device counts of the active `virtual_cuda_devices` contexts, innermost last
_current: list[int] = []  # `torch.cuda.current_device()` of each active context
_calls: list[torch.device | None] = []  # virtual device of each torch call in progress (None: none), innermost last


class VirtualDeviceTensor(torch.Tensor):
    """A tensor reporting a virtual CUDA device (`.device`) whose values are a CPU tensor (`real`)."""

    _inner: torch.Tensor
    _virtual_device: torch.device

    @staticmethod
    def __new__(cls, inner: torch.Tensor, device: torch.device) -> VirtualDeviceTensor:
        if type(inner) is not torch.Tensor or inner.device.type != "cpu":
            raise TypeError(f"VirtualDeviceTensor wraps a plain CPU tensor, got {type(inner).__name__} on {inner.device}")
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls,
            inner.size(),
            strides=inner.stride(),
            storage_offset=inner.storage_offset(),
            dtype=inner.dtype,
            layout=inner.layout,
            device=_CPU,  # what the C++ core sees: no CUDA runtime is ever asked for anything
            requires_grad=inner.requires_grad,
        )
        wrapper._inner = inner.detach() if inner.requires_grad else inner
        wrapper._virtual_device = device
        return wrapper

    def __tensor_flatten__(self) -> tuple[list[str], torch.device]:
        """Torch's wrapper-subclass protocol. Inside the context `nn.Module._apply` swaps parameters because of
        the swap-on-conversion flag; this keeps a module conversion after the context exits swapping too."""
        return ["_inner"], self._virtual_device

    @staticmethod
    def __tensor_unflatten__(inner: dict, device: torch.device, outer_size: Any, outer_stride: Any) -> VirtualDeviceTensor:
        """Torch's wrapper-subclass protocol: the inverse of `__tensor_flatten__`."""
        return VirtualDeviceTensor(inner["_inner"], device)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206 - torch's protocol
        kwargs = kwargs or {}
        special = _SPECIAL.get(func)
        if special is not None:
            return special(*args, **kwargs)
        if func in _RUN_HOOKS:  # the hooks they run are Python code that must keep seeing virtual devices
            return redispatch_function(func, types, args, kwargs)
        devices = [t._virtual_device for t in _tensors((args, kwargs)) if isinstance(t, VirtualDeviceTensor)]
        _calls.append(devices[0] if devices else None)  # tensors torch makes inside this call go there
        try:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        finally:
            _calls.pop()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206 - torch's protocol
        return _run(func, args, kwargs or {})


def real(tensor: torch.Tensor) -> torch.Tensor:
    """The CPU tensor holding a virtual-device tensor's values (a plain tensor is returned as is)."""
    return tensor._inner if isinstance(tensor, VirtualDeviceTensor) else tensor


def _device_of(tensor: torch.Tensor) -> torch.device:
    return tensor._virtual_device if isinstance(tensor, VirtualDeviceTensor) else tensor.device


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


def _place(tensor: Any, device: torch.device) -> Any:
    """`tensor`'s values labelled with `device` (a virtual tensor for CUDA, a plain one for CPU)."""
    if not isinstance(tensor, torch.Tensor):
        return tensor
    inner = real(tensor)
    if device.type != "cuda":
        return inner
    if isinstance(tensor, VirtualDeviceTensor) and tensor._virtual_device == device:
        return tensor
    return VirtualDeviceTensor(inner, device)


def _normalise(device: Device) -> torch.device:
    """A concrete device: plain `cuda` is the current device; an index past the simulated ones is CUDA's error."""
    device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if device.type != "cuda":
        return device
    if not _counts:
        raise RuntimeError(
            f"{device} is a virtual device and no virtual_cuda_devices context is active; move tensors "
            "between virtual devices inside the `with virtual_cuda_devices(n):` block"
        )
    count = _counts[-1]
    index = _current[-1] if device.index is None else device.index
    if index >= count:
        raise RuntimeError(
            f"CUDA error: invalid device ordinal: {device} asked for, but virtual_cuda_devices({count}) "
            f"simulates cuda:0..cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def _is_cuda(device: Any) -> bool:
    if isinstance(device, int):
        return True
    try:
        return torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        return False


class _Move(torch.autograd.Function):
    """A copy of a tensor on another (virtual or CPU) device; the gradient moves back."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, target: torch.device) -> torch.Tensor:  # noqa: D102
        ctx.source = _device_of(tensor)
        return _place(real(tensor).clone(), target)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return _place(real(grad).clone(), ctx.source), None


def _move(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """`Tensor.to` with virtual devices: the same object when nothing changes, as in torch."""
    force_copy = kwargs.pop("copy", False)
    if args and isinstance(args[0], torch.Tensor):  # to(other): other's device and dtype
        other, args = args[0], args[1:]
        device, dtype = _device_of(other), other.dtype
        _, _, non_blocking, memory_format = torch._C._nn._parse_to(torch.float32, *args, **kwargs)
    else:
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    source = _device_of(tensor)
    target = source if device is None else _normalise(device)
    if dtype is not None or memory_format is not None or (force_copy and target == source):
        with torch._C.DisableTorchFunctionSubclass():
            tensor = torch.Tensor.to(tensor, dtype=dtype, copy=force_copy, memory_format=memory_format)
    return tensor if target == source else _Move.apply(tensor, target)


def _cuda(tensor: torch.Tensor, device: Device | None = None, non_blocking: bool = False, **kwargs: Any) -> torch.Tensor:
    return _move(tensor, torch.device("cuda") if device is None else device)


def _cpu(tensor: torch.Tensor, memory_format: Any = None) -> torch.Tensor:
    return _move(tensor, _CPU)


def _repr(tensor: VirtualDeviceTensor, *, tensor_contents: Any = None) -> str:
    body = repr(tensor._inner)
    return f"{body[:-1]}, device='{tensor._virtual_device}')"


def _new_tensor(tensor: VirtualDeviceTensor, data: Any, **kwargs: Any) -> torch.Tensor:
    """`Tensor.new_tensor`: on the tensor's device unless `device=` says otherwise (torch builds it in C++)."""
    device = kwargs.pop("device", None)
    target = tensor._virtual_device if device is None else _normalise(device)
    with torch._C.DisableTorchFunctionSubclass():
        made = torch.Tensor.new_tensor(tensor, data, **kwargs)
    return _place(made, target)


def _deepcopy(tensor: VirtualDeviceTensor, memo: dict) -> torch.Tensor:
    copied = VirtualDeviceTensor(copy.deepcopy(tensor._inner, memo), tensor._virtual_device)
    if getattr(tensor, "_is_param", False):
        copied = torch.nn.Parameter(copied, requires_grad=tensor.requires_grad)
    elif tensor.requires_grad:
        copied.requires_grad_(True)
    memo[id(tensor)] = copied
    return copied


def _numpy(tensor: VirtualDeviceTensor, *, force: bool = False) -> Any:
    raise TypeError(
        f"can't convert {tensor._virtual_device} device type tensor to numpy. "
        "Use Tensor.cpu() to copy the tensor to host memory first."
    )


_SPECIAL = {
    torch.Tensor.device.__get__: lambda t: t._virtual_device,
    torch.Tensor.is_cuda.__get__: lambda t: True,
    torch.Tensor.is_cpu.__get__: lambda t: False,
    torch.Tensor.get_device: lambda t: t._virtual_device.index,
    torch.Tensor.to: _move,
    torch.Tensor.cuda: _cuda,
    torch.Tensor.cpu: _cpu,
    torch.Tensor.__repr__: _repr,
    torch.Tensor.__format__: lambda t, spec: format(t._inner, spec),
    torch.Tensor.tolist: lambda t: t._inner.tolist(),
    torch.Tensor.numpy: _numpy,
    torch.Tensor.__array__: lambda t, *args, **kwargs: _numpy(t),
    torch.Tensor.new_tensor: _new_tensor,
    torch.Tensor.__deepcopy__: _deepcopy,
}
_MOVES = {torch.Tensor.to, torch.Tensor.cuda}  # handled by `_SPECIAL`, whatever the tensor
# Functions that run Python hooks (tensor hooks, custom backward functions) while they run.
_RUN_HOOKS = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}


def _is_pointwise(func: torch._ops.OpOverload) -> bool:
    if torch.Tag.pointwise in func.tags:
        return True
    name = func.overloadpacket.__name__
    if name.endswith("_") and not name.startswith("_"):
        functional = getattr(_aten, name[:-1], None)
        overload = None if functional is None else getattr(functional, func._overloadname, None)
        if overload is not None and torch.Tag.pointwise in overload.tags:
            return True
    return name in _SCALAR_FRIENDLY


def _check_devices(func: torch._ops.OpOverload, args: tuple, tensors: list[torch.Tensor]) -> torch.device:
    """The one device the tensor arguments (`tensors`, flattened from the call) share, or torch's error naming two."""
    if func in _TRANSFERS:
        return _device_of(tensors[0])
    if func in _INDEXING:
        self_device = _device_of(args[0])
        indices = [i for i in args[1] if i is not None]
        for index in indices:
            if _device_of(index) not in (self_device, _CPU):
                raise RuntimeError(
                    f"indices should be either on cpu or on the same device as the indexed tensor ({self_device})"
                )
        tensors = [t for t in tensors if not any(t is i for i in indices)]
    devices = {_device_of(t) for t in tensors}
    if len(devices) == 1:
        return devices.pop()
    cuda = {d for d in devices if d.type == "cuda"}
    if len(cuda) == 1 and _is_pointwise(func):
        if all(_device_of(t).type == "cuda" or t.dim() == 0 for t in tensors):
            return cuda.pop()
    first, second = sorted(devices, key=str)[:2]
    raise RuntimeError(
        "Expected all tensors to be on the same device, but found at least two devices, "
        f"{first} and {second}! (in {func}, simulated by virtual_cuda_devices)"
    )


def _run(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
    """Check devices like torch, run `func` on the CPU values and label the results with the device."""
    if func.overloadpacket.__name__ in _METADATA_MUTATIONS:
        raise NotImplementedError(
            f"{func} changes a tensor's shape or strides in place, which virtual_cuda_devices cannot "
            "follow; use the out-of-place form (e.g. unsqueeze instead of unsqueeze_)"
        )
    tensors = _tensors((args, kwargs))
    device = _check_devices(func, args, tensors)
    if _is_cuda(kwargs.get("device")):  # an explicit CUDA target; a CPU one is the C++ core's view of the input
        device = _normalise(kwargs["device"])
        kwargs = {**kwargs, "device": _CPU}
    inner_args, inner_kwargs = tree_map(real, (args, kwargs))
    result = func(*inner_args, **inner_kwargs)
    if device.type != "cuda":
        return result
    wrappers = {id(real(t)): t for t in tensors if isinstance(t, VirtualDeviceTensor)}

    def wrap(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if id(value) in wrappers:  # an in-place or out= result: the argument itself
            return wrappers[id(value)]
        return VirtualDeviceTensor(value, device)

    return tree_map(wrap, result)


class _DeviceArgumentMode(TorchFunctionMode):
    """Turns `device="cuda:k"` arguments and `.to` / `.cuda()` moves into virtual tensors."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206 - torch's protocol
        kwargs = kwargs or {}
        if func in _MOVES:
            return _SPECIAL[func](*args, **kwargs)
        virtual = [t for t in _tensors((args, kwargs)) if isinstance(t, VirtualDeviceTensor)]
        if func in _SPECIAL and virtual and args and args[0] is virtual[0]:
            return _SPECIAL[func](*args, **kwargs)
        device = kwargs.get("device")
        target = None
        if _is_cuda(device) and func is not torch._C._nn._parse_to:  # it only parses
            target = _normalise(device)
            kwargs = {**kwargs, "device": _CPU}
        _calls.append(virtual[0]._virtual_device if virtual else None)  # where tensors torch makes inside go
        try:
            if func in _RUN_HOOKS:
                with self:  # the hooks they run are Python code that must stay simulated
                    result = redispatch_function(func, types, args, kwargs)
            else:
                result = func(*args, **kwargs)
        finally:
            _calls.pop()
        return result if target is None else tree_map(lambda value: _place(value, target), result)


class _InternalFactoryMode(TorchDispatchMode):
    """Puts tensors that torch's C++ code creates from scratch (`device=` the C++ view, cpu) inside a
    call on virtual tensors on that call's virtual device, where CUDA torch would have made them."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206 - torch's protocol
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if _calls and _calls[-1] is not None and "device" in kwargs and not _tensors(args) and kwargs["device"] in (None, _CPU):
            return tree_map(lambda value: _place(value, _calls[-1]), result)
        return result



@contextlib.contextmanager
def virtual_cuda_devices(count: int) -> Iterator[list[torch.device]]:
    """Simulate `count` CUDA devices on CPU for the duration of the block; yields cuda:0..cuda:{count-1}."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"virtual_cuda_devices(count={count!r}): count must be a positive int, e.g. 2")

    def set_device(device: Device) -> None:
        _current[-1] = _normalise(device).index

    patches = {
        "_lazy_init": lambda: None,
        "is_available": lambda: True,
        "device_count": lambda: count,
        "current_device": lambda: _current[-1],
        "set_device": set_device,
        "synchronize": lambda device=None: None,
    }
    saved = {name: getattr(torch.cuda, name) for name in patches}
    for name, replacement in patches.items():
        setattr(torch.cuda, name, replacement)
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)  # nn.Module.to swaps, so a parameter can change class
    _counts.append(count)
    _current.append(0)
    try:
        with _DeviceArgumentMode(), _InternalFactoryMode():
            yield [torch.device("cuda", index) for index in range(count)]
    finally:
        _counts.pop()
        _current.pop()
        torch.__future__.set_swap_module_params_on_conversion(swap)
        for name, original in saved.items():
            setattr(torch.cuda, name, original)
