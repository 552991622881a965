"""How much memory each pipeline needs: a formula read off what the code allocates (docs/memory.md).

`estimate_memory(model_or_config, pipeline, n_tokens)` adds up, for one input of `n_tokens`
tokens (batch 1, as the study runs), the bytes of

- **weights**: the backbone's parameters (embedding, blocks, final norm, unembedding; bias tensors
  exist even when zero) and, when its parameter count is known, the front end's (vision tower +
  projector), counted on its own device;
- **bank**: the projected video tokens registered in the video bank (two videos for patching);
- **retained**: what the pipeline keeps across the forward pass at its peak (the sweep engine's
  residual entering each layer and every layer's keys/values; run_with_cache's cached hooks; the
  attention patterns; the logits a caller still holds);
- **transient**: the largest working set inside one layer or at the unembedding at that moment
  (the SwiGLU MLP's four [pos, d_mlp] tensors; eager attention's [head, query, key] scores and its
  float32 softmax; the additive masks under a knockout; the [pos, d_vocab] logits, twice while
  `+ b_U` runs);
- **host**: CPU-side bookkeeping that never reaches the accelerator (the knockout specs' [n, n]
  boolean edge matrices the sweep plan holds).

Each pipeline's peak is the largest of its phases (`MemoryEstimate.phase` names it), and
`MemoryEstimate.terms` lists the named terms of that phase, largest first. The formula is validated
against measured peak tensor memory on CPU (benchmarks/model_memory.py,
benchmarks/results/model_memory-cpu.txt). Not counted: kernel scratch space (the fused attention
kernel's blocks, cuBLAS workspaces), the allocator's fragmentation and the CUDA context (about
0.5-1 GiB per device); keep that margin.

    >>> estimate = estimate_memory({"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
    ...     "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064}, "flow", 1500)
    >>> print(estimate)  # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tl_video.model.config import VideoTransformerConfig, resolve_dtype

PIPELINES = ("flow", "pathways", "patching", "lens", "attention", "open_ended", "frontend")
FLOAT32 = 4
LENS_CHUNK = 256  # rows per readout in `video_token_top_k` (its chunk_size default)
DEFAULT_FLOW_SPECS_PER_LAYER = 11  # the four paper presets hold 1 + 4 + 3 + 3 flows, one spec per centre layer
GIB = 2**30

# HF config names -> our names (TransformerLens's names are accepted as they are).
_HF_NAMES = {
    "hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_key_value_heads", "head_dim": "d_head", "intermediate_size": "d_mlp",
    "vocab_size": "d_vocab",
}


@dataclass(frozen=True)
class ModelSizes:
    """The sizes the formula reads: the backbone's shape and, if known, the front end's parameter count."""

    d_model: int
    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    frontend_parameters: int | None = None

    @property
    def block_parameters(self) -> int:
        """Parameters of one block, as `TransformerBlock` allocates them (bias tensors included)."""
        d, h, kv, dh, m = self.d_model, self.n_heads, self.n_key_value_heads, self.d_head, self.d_mlp
        attention = 2 * h * d * dh + 2 * kv * d * dh + h * dh + 2 * kv * dh + d
        mlp = 3 * d * m + 2 * m + d
        return attention + mlp + 2 * d

    @property
    def parameters(self) -> int:
        """Backbone parameters: embedding, blocks, final norm, unembedding and its bias."""
        return 2 * self.d_vocab * self.d_model + self.d_vocab + self.n_layers * self.block_parameters + self.d_model


_FIELDS = ("d_model", "n_layers", "n_heads", "n_key_value_heads", "d_head", "d_mlp", "d_vocab")


def model_sizes(source: Any, frontend_parameters: int | None = None) -> ModelSizes:
    """Sizes from a HookedVideoTransformer, a VideoTransformerConfig, or a dict of HF-config or
    TransformerLens names (hidden_size / d_model, num_hidden_layers / n_layers, ...)."""
    frontend = frontend_parameters
    if hasattr(source, "cfg") and isinstance(source.cfg, VideoTransformerConfig):
        if frontend is None and getattr(source, "frontend", None) is not None:
            frontend = sum(p.numel() for p in source.frontend.parameters())
        source = source.cfg
    if isinstance(source, VideoTransformerConfig):
        values = {name: getattr(source, name) for name in _FIELDS}
    elif isinstance(source, Mapping):
        text = source.get("text_config", source)
        values = {_HF_NAMES.get(key, key): value for key, value in text.items() if _HF_NAMES.get(key, key) in _FIELDS}
        if frontend is None:
            frontend = source.get("frontend_parameters")
    else:
        raise TypeError(
            f"estimate_memory takes a HookedVideoTransformer, a VideoTransformerConfig or a dict of config sizes, "
            f"got {type(source).__name__}"
        )
    missing = [name for name in ("d_model", "n_layers", "n_heads", "d_mlp", "d_vocab") if values.get(name) is None]
    if missing:
        hf = {ours: theirs for theirs, ours in _HF_NAMES.items()}
        raise ValueError(
            "config sizes lack " + ", ".join(f"{name} (HF: {hf[name]})" for name in missing)
            + "; give them in the dict"
        )
    if values.get("n_key_value_heads") is None:
        values["n_key_value_heads"] = values["n_heads"]
    if values.get("d_head") is None:
        values["d_head"] = values["d_model"] // values["n_heads"]
    return ModelSizes(**{name: int(values[name]) for name in _FIELDS}, frontend_parameters=frontend)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one pipeline on one input, in bytes (see the module docstring for each part)."""

    pipeline: str
    n_tokens: int
    dtype: str
    n_devices: int
    weights_bytes: int  # backbone parameters
    frontend_bytes: int | None  # front-end parameters (vision tower + projector); None when unknown
    bank_bytes: int  # projected video tokens in the video bank
    retained_bytes: int  # kept across the pass at the peak (caches, keys/values, patterns, held logits)
    transient_bytes: int  # the working set of one layer or of the unembedding at the peak
    host_bytes: int  # CPU-side bookkeeping (knockout edge matrices), not on the accelerator
    phase: str  # the phase in which the peak falls
    terms: tuple[tuple[str, int], ...]  # named terms of retained + transient, largest first
    per_device_bytes: tuple[int, ...] = field(default=())  # backbone devices, layers split evenly

    @property
    def activation_bytes(self) -> int:
        """Everything the pipeline allocates beyond weights and bank (host bookkeeping included)."""
        return self.retained_bytes + self.transient_bytes + self.host_bytes

    @property
    def device_bytes(self) -> int:
        """Backbone weights + bank + retained + transient: accelerator memory with one device for the backbone."""
        return self.weights_bytes + self.bank_bytes + self.retained_bytes + self.transient_bytes

    @property
    def total_bytes(self) -> int:
        """Accelerator memory over all devices, the front end's weights included when known."""
        return self.device_bytes + (self.frontend_bytes or 0)

    @property
    def dominant(self) -> str:
        """The largest term of the peak, weights included."""
        named = [("weights", self.weights_bytes), ("front-end weights", self.frontend_bytes or 0), *self.terms]
        return max(named, key=lambda item: item[1])[0]

    def table(self) -> str:
        """A small text table in GiB."""
        rows = [
            ("backbone weights", self.weights_bytes),
            ("front-end weights (own device)", self.frontend_bytes),
            ("video bank", self.bank_bytes),
            ("retained at peak", self.retained_bytes),
            ("transient at peak", self.transient_bytes),
            ("total on accelerators", self.total_bytes),
            ("host-side (CPU) bookkeeping", self.host_bytes),
        ]
        lines = [f"{self.pipeline}: {self.n_tokens} tokens, {self.dtype}, peak in {self.phase}"]
        lines += [f"  {name:32s} {'unknown' if value is None else f'{value / GIB:9.2f} GiB'}" for name, value in rows]
        lines.append("  largest terms: " + ", ".join(f"{name} {value / GIB:.2f} GiB" for name, value in self.terms[:4]))
        if self.n_devices > 1:
            lines.append("  per backbone device: " + ", ".join(f"{value / GIB:.2f}" for value in self.per_device_bytes) + " GiB")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


@dataclass(frozen=True)
class _Phase:
    """One phase of a pipeline: named retained and transient terms, and which scale with depth."""

    name: str
    retained: dict[str, int]
    transient: dict[str, int]
    per_layer: frozenset[str]  # terms split over the devices with the layers (the rest sit on one device)

    @property
    def total(self) -> int:
        return sum(self.retained.values()) + sum(self.transient.values())


def estimate_memory(
    config_or_model: Any,
    pipeline: str,
    n_tokens: int,
    dtype: torch.dtype | str = torch.bfloat16,
    n_devices: int = 1,
    *,
    n_video_tokens: int | None = None,
    n_frames: int = 8,
    n_specs: int | None = None,
    generated_tokens: int = 16,
    frontend_parameters: int | None = None,
    n_query_tokens: int = 64,
) -> MemoryEstimate:
    """Peak memory of `pipeline` on one input of `n_tokens` tokens (batch 1, as the study runs).

    `n_video_tokens` (default: all but 10% of the tokens) sizes the bank and the lens readout;
    `n_frames` is patching's batch (one row per frame); `n_specs` the knockout specs of one flow call
    (default: the four paper presets at every centre layer, 11 per layer); `generated_tokens` the
    open-ended answer length; `n_query_tokens` the attention maps' query group (the question with its
    options, about 64 tokens on TVBench). With `n_devices` > 1 the backbone's layers are split evenly over them
    (`per_device_bytes`) and the front end sits on a device of its own.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"estimate_memory pipeline={pipeline!r} is unknown; valid: {', '.join(PIPELINES)}")
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"estimate_memory n_tokens={n_tokens!r} must be a positive integer (the input's length)")
    if isinstance(n_devices, bool) or not isinstance(n_devices, int) or n_devices < 1:
        raise ValueError(f"estimate_memory n_devices={n_devices!r} must be a positive integer")
    sizes = model_sizes(config_or_model, frontend_parameters)
    if n_devices > sizes.n_layers:
        raise ValueError(f"estimate_memory n_devices={n_devices} exceeds the model's {sizes.n_layers} layers")
    torch_dtype = resolve_dtype(dtype)
    b = torch_dtype.itemsize
    n_video = max(0, int(0.9 * n_tokens)) if n_video_tokens is None else n_video_tokens
    weights = 0 if pipeline == "frontend" else sizes.parameters * b  # the front end alone: its own weights only
    frontend = None if sizes.frontend_parameters is None else sizes.frontend_parameters * b
    videos = 2 if pipeline == "patching" else 1
    bank = 0 if pipeline == "frontend" else videos * n_video * (sizes.d_model * b + 4 * 8)  # embeddings, grid, index
    phases = _phases(sizes, pipeline, n_tokens, b, n_video, n_frames, generated_tokens, n_query_tokens)
    peak = max(phases, key=lambda phase: phase.total)
    host = _host_bytes(sizes, pipeline, n_tokens, n_specs)
    terms = tuple(sorted([*peak.retained.items(), *peak.transient.items()], key=lambda item: -item[1]))
    per_device = () if pipeline == "frontend" else _per_device(sizes, peak, b, bank, n_devices)
    return MemoryEstimate(
        pipeline=pipeline, n_tokens=n_tokens, dtype=str(torch_dtype).removeprefix("torch."), n_devices=n_devices,
        weights_bytes=weights, frontend_bytes=frontend, bank_bytes=bank,
        retained_bytes=sum(peak.retained.values()), transient_bytes=sum(peak.transient.values()), host_bytes=host,
        phase=peak.name, terms=terms, per_device_bytes=per_device,
    )


def devices_needed(
    config_or_model: Any,
    pipeline: str,
    n_tokens: int,
    device_bytes: float,
    *,
    usable: float = 0.9,
    **options: Any,
) -> int | None:
    """The fewest devices of `device_bytes` each that hold `pipeline` on one input, the backbone's layers
    split evenly and the front end's weights (when known) on the first device; None if even one layer
    per device does not fit. `usable` leaves the rest of each device to the CUDA context, the
    allocator's fragmentation and kernel workspaces, which the estimate does not count."""
    if not 0 < usable <= 1:
        raise ValueError(f"devices_needed usable={usable!r} must be a fraction in (0, 1]")
    n_layers = model_sizes(config_or_model, options.get("frontend_parameters")).n_layers
    for count in range(1, n_layers + 1):
        estimate = estimate_memory(config_or_model, pipeline, n_tokens, n_devices=count, **options)
        loads = list(estimate.per_device_bytes) or [0]
        loads[0] += estimate.frontend_bytes or 0
        if max(loads) <= usable * device_bytes:
            return count
    return None


# ------------------------------------------------------------------------------- the code's allocations
def _layer_transient(s: ModelSizes, b: int, rows: int) -> dict[str, int]:
    """The largest working set inside one block (`TransformerBlock.forward`) over `rows` query
    positions, beyond its input (kept by the caller) and the masks (counted by the pipeline).

    MLP phase: gate and up projections, act(gate) and the product ([pos, d_mlp] each), with attn_out,
    resid_mid and ln2's output alive. Attention phase: ln1's three outputs, q / k / v, the rotated
    q and k, z, its contiguous copy and the output projection. RMSNorm in half precision holds the
    float32 input and quotient while it runs."""
    d, m, hq, hkv = s.d_model, s.d_mlp, s.n_heads * s.d_head, s.n_key_value_heads * s.d_head
    mlp = rows * (4 * m + 3 * d) * b
    attention = rows * (4 * d + 4 * hq + 3 * hkv) * b
    norm = rows * 2 * d * b + (rows * d * 2 * FLOAT32 if b < FLOAT32 else 0)
    phase = max(("MLP working set (4 x pos x d_mlp)", mlp), ("attention working set", attention), ("RMSNorm working set", norm),
                key=lambda item: item[1])
    return {phase[0]: phase[1]}


def _logits(s: ModelSizes, b: int, rows: int, into_cache: bool = False) -> dict[str, int]:
    """The unembedding of `rows` positions: the einsum's output and `+ b_U`'s ([rows, d_vocab] each),
    with the final residual, ln_final's output and the last layer's keys/values (the forward's
    `present` still references them; already counted when they went `into_cache`)."""
    terms = {"logits at the unembedding (2 x pos x d_vocab)": 2 * rows * s.d_vocab * b,
             "final residual and its norm": 2 * rows * s.d_model * b}
    if not into_cache:
        terms["last layer's keys/values"] = 2 * rows * s.n_key_value_heads * s.d_head * b
    return terms


def _kv(s: ModelSizes, b: int, positions: int, layers: int) -> int:
    return layers * 2 * positions * s.n_key_value_heads * s.d_head * b


def _phases(s: ModelSizes, pipeline: str, n: int, b: int, n_video: int, n_frames: int,
            generated: int, n_query: int) -> list[_Phase]:
    L, d = s.n_layers, s.d_model
    resid = n * d * b
    layers = frozenset({"residual entering each layer", "keys/values of every layer", "cached resid_pre of every layer",
                        "cached resid_post of every layer", "query rows to the video of every layer",
                        "video-token residuals of every layer", "video-token residuals of every layer, indexed and stacked",
                        "key/value cache", "knockout rows moved per hooked layer"})
    if pipeline == "frontend":  # vision tower + projector: parameters only (their activations are not modelled)
        return [_Phase("front end (parameters only)", {}, {}, frozenset())]
    if pipeline in ("flow", "pathways"):
        # sweep_engine.clean_pass: residual entering each layer + a full KeyValueCache, then each spec's
        # resumed pass from its first blocked layer with queries from its earliest blocked position.
        kept = {"residual entering each layer": L * resid, "keys/values of every layer": _kv(s, b, n, L),
                "final residual": resid}
        clean = _Phase("clean pass", kept, _layer_transient(s, b, n), layers)
        resumed = {
            "causal mask and its knocked-out copy": 2 * n * n * b,
            "extended keys/values of two layers": _kv(s, b, n, 2),
            **_layer_transient(s, b, n),
        }
        if pipeline == "pathways":  # the random baseline blocks a different set in every layer: one row block per layer
            resumed["knockout rows moved per hooked layer"] = L * n * n
        else:
            resumed["knockout rows"] = n * n
        return [clean, _Phase("resumed knockout pass", kept, resumed, layers)]
    if pipeline == "patching":
        # patching_record: corrupted and clean logits held (views of [1, n, d_vocab]), run_with_cache of
        # resid_pre, then one batched forward per layer (a row per frame) under `last_position_logits`:
        # the batch's layers run over frames x pos rows (the block holds its own keys/values and the loop
        # the previous layer's while the MLP runs), and only the last position is unembedded.
        kept = {"cached resid_pre of every layer": L * resid, "logits held by the caller": 3 * n * s.d_vocab * b}
        rows = n_frames * n
        batch = {**{f"{k} (frames x pos rows)": v for k, v in _layer_transient(s, b, rows).items()},
                 "batched residual": rows * d * b,
                 "keys/values of this layer and the previous one (frames x pos rows)":
                     4 * rows * s.n_key_value_heads * s.d_head * b}
        return [
            _Phase("clean run_with_cache", {"logits held by the caller": 2 * n * s.d_vocab * b,
                                            "cached resid_pre of every layer": L * resid}, _logits(s, b, n), layers),
            _Phase("batched patching forward", kept, batch, layers),
        ]
    if pipeline == "lens":
        # video_token_top_k: run_with_cache of resid_post (its logits stay referenced), the video rows of each
        # layer indexed then stacked (both alive while stacking), then [chunk, d_vocab] readouts: the previous chunk's float32 logits + the unembedding's output.
        kept = {"cached resid_post of every layer": L * resid}
        readout_bytes = FLOAT32 + b + max(b, FLOAT32)
        chunk = min(LENS_CHUNK, L * n_video)
        video_rows = L * n_video * d * b
        return [
            _Phase("run_with_cache", kept, _logits(s, b, n), layers),
            _Phase("stacking the video rows", {**kept, "logits held by the caller": n * s.d_vocab * b},
                   {"video-token residuals of every layer, indexed and stacked": 2 * video_rows}, layers),
            _Phase("video-token readout", {**kept, "logits held by the caller": n * s.d_vocab * b,
                                           "video-token residuals of every layer": video_rows},
                   {"readout of one chunk": chunk * s.d_vocab * readout_bytes}, layers),
        ]
    if pipeline == "attention":
        # query_attention_to_video: eager attention in every layer; a hook on hook_pattern keeps, as each layer
        # runs, only the query rows' attention to the video ([head, query, video] in float32), and the forward
        # stops before the unembedding. The layer computing holds scores + float32 softmax and its pattern; a
        # knockout adds the built causal mask and its knocked-out copy.
        query_rows = s.n_heads * n_query * n_video * FLOAT32
        hq, hkv = s.n_heads * s.d_head, s.n_key_value_heads * s.d_head
        eager = {"scores + float32 softmax of one layer": s.n_heads * n * n * (b + FLOAT32),
                 "this layer's pattern": s.n_heads * n * n * b if b < FLOAT32 else 0,  # fp32: the softmax itself
                 "this layer's residual, normed input, q/k/v and rotated q/k": n * (2 * d + 2 * hq + 3 * hkv) * b,
                 "its query rows, indexed then as float32": s.n_heads * n_query * (n * b + n_video * (b + FLOAT32)),
                 "causal mask and its knocked-out copy": 2 * n * n * b,
                 "the knockout's blocked edges on the device (bool)": n * n,
                 "keys/values repeated for grouped-query heads": (2 * n * s.n_heads * s.d_head * b
                                                                  if s.n_key_value_heads != s.n_heads else 0)}
        return [_Phase("eager attention, last layer", {"query rows to the video of every layer": (L - 1) * query_rows},
                       eager, layers)]
    if pipeline == "open_ended":
        # greedy_generate's prefill fills the key/value cache and unembeds every position; the probe then
        # runs the knockouts: through the sweep engine when the anchor is the first answer token (as flow),
        # else reruns the prompt under each knockout (the causal mask built once) into a new cache.
        total = n + generated
        kept = {"key/value cache": _kv(s, b, total, L)}
        return [
            _Phase("prefill, last layer", kept, _layer_transient(s, b, n), layers),
            _Phase("prefill, unembedding", kept, _logits(s, b, n, into_cache=True), layers),
            _Phase("knockout probe of the prompt, unembedding", kept,
                   {**_logits(s, b, n, into_cache=True), "causal mask": n * n * b}, layers),
            *_phases(s, "flow", n, b, n_video, n_frames, generated, n_query),
        ]
    raise AssertionError(pipeline)


def _host_bytes(s: ModelSizes, pipeline: str, n: int, n_specs: int | None) -> int:
    """[n, n] boolean edge matrices the knockout specs compile to (one per spec; the random baseline one per layer)."""
    if pipeline in ("flow", "open_ended"):  # open-ended's probe of the first answer token is a flow sweep
        specs = DEFAULT_FLOW_SPECS_PER_LAYER * s.n_layers if n_specs is None else n_specs
        return specs * n * n
    if pipeline == "pathways":
        return (s.n_layers + 4) * n * n
    if pipeline == "attention":
        return n * n
    return 0


_EVERY_DEVICE = frozenset({"MLP working set (4 x pos x d_mlp)", "attention working set", "RMSNorm working set",
                           "MLP working set (4 x pos x d_mlp) (frames x pos rows)", "attention working set (frames x pos rows)",
                           "RMSNorm working set (frames x pos rows)", "batched residual",
                           "keys/values of this layer and the previous one (frames x pos rows)",
                           "scores + float32 softmax of one layer", "this layer's pattern",
                           "its query rows, indexed then as float32",
                           "this layer's residual, normed input, q/k/v and rotated q/k"})


def _per_device(s: ModelSizes, peak: _Phase, b: int, bank: int, n_devices: int) -> tuple[int, ...]:
    """Backbone memory per device: layer-wise terms split with the layers (ceil share on the first devices),
    embedding + bank on the first device, final norm + unembedding + everything else at the peak on the last."""
    shares = [s.n_layers // n_devices + (1 if index < s.n_layers % n_devices else 0) for index in range(n_devices)]
    terms = {**peak.retained, **peak.transient}
    layered = sum(v for k, v in terms.items() if k in peak.per_layer)
    everywhere = sum(v for k, v in terms.items() if k in _EVERY_DEVICE)  # a layer's working set, on whichever device runs it
    rest = peak.total - layered - everywhere
    embedding = s.d_vocab * s.d_model * b
    unembedding = s.d_vocab * s.d_model * b + s.d_vocab * b + s.d_model * b
    devices = []
    for index, share in enumerate(shares):
        fraction = share / s.n_layers
        value = int(share * s.block_parameters * b + layered * fraction + everywhere)
        if index == 0:
            value += embedding + bank
        if index == n_devices - 1:
            value += unembedding + rest
        devices.append(value)
    return tuple(devices)


# ------------------------------------------------------------------------------- measuring
class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storages created inside the context and alive together (views counted once):
    what `estimate_memory` predicts beyond the weights, measured on any device, CPU included.

    Every operator output passes through this dispatch mode; a storage counts from its creation until
    it is freed. Storages that existed before (`external`: parameters, buffers, inputs) are not
    counted. Memory inside an operator (a kernel's scratch space) is not seen.

        >>> with torch.no_grad(), PeakTensorMemory([*model.parameters(), *model.buffers()]) as tracker:  # doctest: +SKIP
        ...     model(tokens)
        >>> tracker.peak  # doctest: +SKIP
    """

    def __init__(self, external: Sequence[torch.Tensor] = (), debug: bool = False):
        super().__init__()
        self.external = {(t.untyped_storage().data_ptr(), t.device) for t in external}
        self.live: dict[tuple[int, torch.device], int] = {}
        self.described: dict[tuple[int, torch.device], str] = {}
        self.current = self.peak = 0
        self.debug = debug
        self.at_peak: list[tuple[str, int]] = []

    def _free(self, key: tuple[int, torch.device]) -> None:
        self.current -= self.live.pop(key, 0)
        self.described.pop(key, None)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = (storage.data_ptr(), tensor.device)
            if key in self.live or key in self.external or storage.nbytes() == 0:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            if self.debug:
                self.described[key] = f"{func} {tuple(tensor.shape)} {tensor.dtype}"
            weakref.finalize(storage, self._free, key)
        if self.current > self.peak:
            self.peak = self.current
            if self.debug:
                self.at_peak = sorted(((self.described[k], v) for k, v in self.live.items()), key=lambda x: -x[1])
        return out
