"""HookedVideoTransformer: a VideoLLM's language backbone with TransformerLens hook points.

Projected video tokens enter through the video bank (see `video_bank.py`), so every input is a
plain integer token tensor and TransformerLens's `ActivationCache`, `patching` and
`tools.analysis` run on it unchanged. Loading and input preparation live in
`tl_video.loading` and `tl_video.prompts`; this module is assembly and forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from tl_video.model.block import TransformerBlock
from tl_video.model.config import VideoTransformerConfig, resolve_device
from tl_video.model.embed import Embed, Unembed
from tl_video.model.kv_cache import KeyValueCache
from tl_video.model.masks import CausalMask, forward_mask
from tl_video.model.placement import DevicePlacement
from tl_video.model.positions import sequential_position_ids
from tl_video.model.rms_norm import RMSNorm
from tl_video.model.rotary import RotaryEmbedding
from tl_video.model.tokenization import TokenizationMixin
from tl_video.model.video_bank import VideoBank

if TYPE_CHECKING:
    from tl_video.prompts.prepared import PreparedInput

ReturnType = Literal["logits", "loss", "both"] | None
# Buffers built in float32 whatever the model's dtype (ours and HF's vision towers'): rotary frequencies.
_FLOAT32_TABLES = ("inv_freq", "original_inv_freq", "long_inv_freq")
# Hook points that exist only while a TransformerLens switch is on.
_SWITCHED_HOOKS = {
    "attn.hook_result": "use_attn_result",
    "hook_q_input": "use_split_qkv_input",
    "hook_k_input": "use_split_qkv_input",
    "hook_v_input": "use_split_qkv_input",
    "hook_attn_in": "use_attn_in",
    "hook_mlp_in": "use_hook_mlp_in",
}


class HookedVideoTransformer(TokenizationMixin, HookedRootModule):
    """A hooked language backbone fed by a projected-video-token front end.

    >>> model = HookedVideoTransformer.from_pretrained("llava-hf/LLaVA-NeXT-Video-7B-hf")  # doctest: +SKIP
    >>> inp = model.prepare(video="clip.mp4", prompt="What happens?")  # doctest: +SKIP
    >>> logits, cache = model.run_with_cache(inp.tokens)  # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: VideoTransformerConfig,
        tokenizer: Any = None,
        frontend: nn.Module | None = None,
        processor: Any = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.processor = processor
        self.embed = Embed(cfg)
        self.video_bank = VideoBank(cfg.d_vocab, cfg.d_model, cfg.dtype)
        self.hook_video_embed = HookPoint()  # [batch, video_pos, d_model], projected video tokens
        self.hook_embed = HookPoint()  # [batch, pos, d_model], text and video embeddings together
        self.rotary = RotaryEmbedding(cfg)
        self.blocks = nn.ModuleList([TransformerBlock(cfg, layer) for layer in range(cfg.n_layers)])
        self.ln_final = RMSNorm(cfg.d_model, cfg.eps, cfg.dtype)
        self.unembed = Unembed(cfg)
        self.frontend = frontend
        self._placement: DevicePlacement | None = None  # None: everything on cfg.device
        self._last_position_logits = False  # see `last_position_logits`
        self.setup()

    # ------------------------------------------------------------------ loading and inputs
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> "HookedVideoTransformer":
        """Load a supported VideoLLM from a hub id or a local folder; see `tl_video.loading.load`."""
        from tl_video.loading import load_pretrained

        return load_pretrained(cls, name_or_path, **kwargs)

    def prepare(self, video: Any, prompt: str, **kwargs: Any) -> "PreparedInput":
        """Turn a video (uint8 [T,H,W,3] frames or a file path) and a prompt into tokens + layout.

        A file's frame rate and sampled frame indices reach the families that use timing (Qwen2.5-VL,
        Qwen3-VL, VideoLLaMA3); for frames pass `fps=` (and `frame_indices=`), see `prepare_input`.
        """
        from tl_video.prompts.prepare import prepare_input

        return prepare_input(self, video=video, prompt=prompt, **kwargs)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input: Int[torch.Tensor, "batch pos"] | Float[torch.Tensor, "batch pos d_model"],
        return_type: ReturnType = "logits",
        *,
        attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
        position_ids: torch.Tensor | None = None,
        start_at_layer: int | None = None,
        stop_at_layer: int | None = None,
        past_kv_cache: KeyValueCache | None = None,
        tokens: Int[torch.Tensor, "batch pos"] | None = None,
    ) -> Any:
        """Run the backbone.

        `input` is a token tensor, or the residual stream entering layer `start_at_layer`
        (then pass `tokens` or `position_ids` when positions are not plain 0..pos-1).
        `stop_at_layer=l` returns the residual stream entering layer l (l = n_layers: the final,
        un-normed residual). `attention_mask` marks padding of the new tokens (1 = real token).
        `past_kv_cache` is read and extended in place; positions continue after its last ones.
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type={return_type!r}; expected 'logits', 'loss', 'both' or None")
        start = self._check_layer("start_at_layer", start_at_layer, 0)
        stop = self._check_layer("stop_at_layer", stop_at_layer, self.cfg.n_layers)
        if start_at_layer is None:
            tokens = self._check_tokens(input)
            if attention_mask is None and (past_kv_cache is None or past_kv_cache.length == 0):
                self._refuse_unmasked_left_padding(tokens)
            residual = self.embed_tokens(tokens)
        else:
            residual = self._check_residual(input, start)
            tokens = None if tokens is None else self._check_tokens(tokens, "tokens")
            if tokens is not None and tokens.shape != residual.shape[:2]:
                raise ValueError(
                    f"tokens= {tuple(tokens.shape)} must match the residual's [batch, pos] {tuple(residual.shape[:2])}"
                )
        batch, length = residual.shape[:2]
        attention_mask = self._check_attention_mask(attention_mask, batch, length)
        past_length = 0 if past_kv_cache is None else past_kv_cache.length
        key_padding = self._key_padding(attention_mask, past_kv_cache, batch, length, residual.device)
        if position_ids is not None:
            position_ids = self._check_position_ids(position_ids, batch, length)
        if position_ids is None:
            position_ids = self.position_ids(tokens, attention_mask, past_kv_cache, batch, length, residual.device)
        positions_device = residual.device
        cos, sin = self.rotary(position_ids.to(residual.device), residual.dtype)
        query_index = torch.arange(past_length, past_length + length, device=residual.device)
        key_index = torch.arange(past_length + length, device=residual.device)
        mask = forward_mask(query_index, key_index, key_padding, batch, residual.dtype)
        layer_inputs = _PerDevice(residual.device, cos, sin, mask)

        injections = self.video_injections(tokens, start)
        block_devices = self.placement.blocks
        for layer in range(start, stop):
            device = block_devices[layer]
            residual = residual.to(device)
            cos, sin, mask = layer_inputs.on(device)
            past = None if past_kv_cache is None else past_kv_cache.layers[layer]
            injection = injections.get(layer)
            if injection is not None:
                injection = (injection[0].to(device), injection[1].to(device))
            residual, present = self.blocks[layer](residual, cos, sin, mask, past, injection)
            if past_kv_cache is not None:
                past_kv_cache.layers[layer] = present
        if past_kv_cache is not None:
            past_kv_cache.key_padding_mask = key_padding
            past_kv_cache.append_positions(position_ids.to(positions_device))
        if stop_at_layer is not None:
            return residual
        if return_type is None:
            return None
        if self._last_position_logits and return_type == "logits":
            residual = residual[:, -1:]
        logits = self.final_logits(residual)
        if return_type == "logits":
            return logits
        loss = self.loss(logits, tokens)
        return loss if return_type == "loss" else (logits, loss)

    def final_logits(self, residual: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        """The final norm and unembedding of a residual (moved to their device first)."""
        return self.unembed(self.ln_final(residual.to(self.placement.unembed)))

    @contextmanager
    def last_position_logits(self) -> Iterator[None]:
        """Inside, a forward that returns logits unembeds only the last position ([batch, 1, d_vocab]).

        For drivers that run many forwards and read only the last position, such as TransformerLens's
        patching loop under a last-position metric: full-sequence logits cost batch·pos·d_vocab each
        (29 GiB per forward for a 152k vocabulary, 3,236 tokens and 16 batch rows in bf16).
        """
        previous, self._last_position_logits = self._last_position_logits, True
        try:
            yield
        finally:
            self._last_position_logits = previous

    def embed_tokens(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_model"]:
        """Text ids through W_E, video ids through the bank; `hook_video_embed` sees the video rows."""
        is_video = self.video_bank.is_video(tokens)
        embeddings = self.embed(tokens.masked_fill(is_video, 0))
        video_counts = is_video.sum(-1)
        if int(video_counts.max()) > 0:
            if not bool((video_counts == video_counts[0]).all()):
                raise ValueError(
                    f"every row of a batch must hold the same number of video tokens, got {video_counts.tolist()}"
                )
            video = self.video_bank.lookup(tokens[is_video]).to(embeddings.dtype)
            video = self.hook_video_embed(video.view(tokens.shape[0], int(video_counts[0]), -1))
            embeddings = embeddings.masked_scatter(is_video[..., None], video.reshape(-1, video.shape[-1]))
        return self.hook_embed(embeddings)

    def video_injections(
        self, tokens: Int[torch.Tensor, "batch pos"] | None, start: int
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, (video mask, features) added after that layer: banked `deepstack` extras."""
        deepstack = self.video_bank.extras.get("deepstack")  # [n_banked, levels, d_model]
        if deepstack is None:
            return {}
        levels = deepstack.shape[1]
        if tokens is None:
            if start < levels:
                raise ValueError(
                    f"this model adds video features after layers 0..{levels - 1}; starting at layer {start} "
                    "needs tokens= so they can be placed"
                )
            return {}
        is_video = self.video_bank.is_video(tokens)
        if not bool(is_video.any()):
            return {}
        rows = deepstack[self.video_bank.rows(tokens[is_video]).to(deepstack.device)].to(self.cfg.dtype)  # [n_video_total, levels, d]
        rows = rows.view(tokens.shape[0], -1, levels, rows.shape[-1])
        return {level: (is_video, rows[:, :, level]) for level in range(levels)}

    def position_ids(
        self,
        tokens: Int[torch.Tensor, "batch pos"] | None,
        attention_mask: Int[torch.Tensor, "batch pos"] | None,
        past_kv_cache: KeyValueCache | None,
        batch: int,
        length: int,
        device: torch.device,
    ) -> torch.Tensor:
        """Positions derived from the tokens: 1D, or M-RoPE (t, h, w) from the bank's video grid."""
        start = None
        if past_kv_cache is not None and past_kv_cache.last_position_ids is not None:
            start = past_kv_cache.last_position_ids + 1
        if self.cfg.mrope_section is None:
            return sequential_position_ids(attention_mask, batch, length, device, start)
        from tl_video.model.mrope_positions import mrope_position_ids

        if tokens is None:
            raise ValueError("M-RoPE positions depend on the video tokens: pass tokens= or position_ids=")
        return mrope_position_ids(self.cfg, tokens, self.video_bank, attention_mask, start)

    def loss(self, logits: Float[torch.Tensor, "batch pos d_vocab"], tokens: Int[torch.Tensor, "batch pos"] | None) -> torch.Tensor:
        """Mean next-token cross-entropy over text targets (video tokens are never predicted)."""
        if tokens is None:
            raise ValueError("return_type='loss' needs the tokens (pass tokens= with start_at_layer)")
        targets = tokens[:, 1:].masked_fill(self.video_bank.is_video(tokens[:, 1:]), -100).to(logits.device)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)

    def run_with_cache(self, *model_args: Any, return_cache_object: bool = True, **kwargs: Any) -> tuple[Any, ActivationCache | dict]:
        """As HookedRootModule.run_with_cache, returning a TransformerLens `ActivationCache`."""
        if kwargs.get("device") is None and not self.placement.is_single_device:
            kwargs["device"] = self.placement.unembed  # where TransformerLens's tools combine layers with W_U
        out, cache_dict = super().run_with_cache(*model_args, **kwargs)
        if not return_cache_object:
            return out, cache_dict
        return out, ActivationCache(cache_dict, self, has_batch_dim=not kwargs.get("remove_batch_dim", False))

    def to(self, *args: Any, **kwargs: Any) -> "HookedVideoTransformer":
        """Move or cast like nn.Module.to, keeping `cfg.device` / `cfg.dtype` in step."""
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        resolve_device(device)  # a device this machine lacks is one clear error, before anything moves
        moved = super().to(*args, **kwargs)
        if device is not None:
            self.cfg.device = str(device)
            self._placement = None
        if dtype is not None:
            self.cfg.dtype = dtype
        return moved

    def _apply(self, fn: Any, recurse: bool = True) -> "HookedVideoTransformer":
        """Every cast or move (`to`, `half`, `bfloat16`, `cuda`) keeps the rotary frequency tables in float32,
        as loading in a dtype does (positions need their precision), and `cfg.dtype` in step with the weights."""
        tables = {name: buffer for name, buffer in self.named_buffers() if name.rpartition(".")[2] in _FLOAT32_TABLES}
        super()._apply(fn, recurse)
        for name, table in tables.items():
            owner, _, key = name.rpartition(".")
            module = self.get_submodule(owner)
            module._buffers[key] = table.to(module._buffers[key].device)
        self.cfg.dtype = self.W_E.dtype
        if self._placement is not None and any(
            block.ln1.w.device != device for block, device in zip(self.blocks, self._placement.blocks)
        ):  # moved as a whole (e.g. `.cuda()`): the split is gone
            self._placement = None
            self.cfg.device = str(self.W_E.device)
        return self

    # ------------------------------------------------------------------ devices
    @property
    def placement(self) -> DevicePlacement:
        """Where each part lives: set by `place`, else everything on `cfg.device`."""
        if self._placement is not None:
            return self._placement
        device = self.W_E.device
        frontend = next((p.device for p in self.frontend.parameters()), device) if self.frontend is not None else device
        return DevicePlacement(device, (device,) * self.cfg.n_layers, device, frontend)

    def place(self, placement: DevicePlacement) -> "HookedVideoTransformer":
        """Split the model over devices layer-wise (see `tl_video.model.placement`); each part moves once.

        Input tokens go to the embedding's device (`cfg.device`); the residual stream moves to each
        block's device as it enters it; logits, and caches unless `run_with_cache(device=...)` says
        otherwise, land on the unembedding's device.
        """
        if len(placement.blocks) != self.cfg.n_layers:
            raise ValueError(
                f"the placement names devices for {len(placement.blocks)} layers (layers_per_device sums to that); "
                f"this model has {self.cfg.n_layers}"
            )
        for device in placement.devices:
            resolve_device(device)
        for module in (self.embed, self.video_bank, self.rotary):
            module.to(placement.embed)
        for block, device in zip(self.blocks, placement.blocks):
            block.to(device)
        self.ln_final.to(placement.unembed)
        self.unembed.to(placement.unembed)
        if self.frontend is not None:
            self.frontend.to(placement.frontend)
        self.cfg.device = str(placement.embed)
        self._placement = placement
        return self

    def generate(self, input: Int[torch.Tensor, "batch pos"], max_new_tokens: int = 16, **kwargs: Any) -> torch.Tensor:
        """Greedy decoding with a key/value cache; active hooks apply at every step."""
        from tl_video.model.generation import greedy_generate

        return greedy_generate(self, input, max_new_tokens=max_new_tokens, **kwargs)

    # ------------------------------------------------------------------ what TransformerLens reads
    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[torch.Tensor, "d_vocab"]:
        return self.unembed.b_U

    @property
    def W_E(self) -> Float[torch.Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_O(self) -> Float[torch.Tensor, "n_layers head_index d_head d_model"]:
        return torch.stack([block.attn.W_O.to(self.W_U.device) for block in self.blocks])

    def tokens_to_residual_directions(self, tokens: Any) -> Float[torch.Tensor, "... d_model"]:
        """Unembedding directions of tokens, with the final norm's gain folded in.

        Because the final RMSNorm's weight is not folded into W_U here, it is folded into the
        direction, so `ActivationCache.logit_attrs` (which divides by the cached scale) is exact.
        """
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        tokens = torch.as_tensor(tokens, device=self.W_U.device)
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or (
            tokens.numel() and not (0 <= int(tokens.min()) and int(tokens.max()) < self.cfg.d_vocab)
        ):
            raise ValueError(
                f"tokens_to_residual_directions takes text token ids in [0, {self.cfg.d_vocab}) (video tokens have no "
                f"unembedding), got {tokens.dtype} ids {tokens.flatten()[:4].tolist()}"
            )
        directions = (self.W_U * self.ln_final.w[:, None])[:, tokens]
        return directions.movedim(0, -1) if directions.ndim > 1 else directions

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> torch.Tensor:
        """Sum of the attention and MLP output biases written before `layer` (TransformerLens API)."""
        total = torch.zeros(self.cfg.d_model, device=self.W_U.device, dtype=self.cfg.dtype)
        for index in range(layer):
            total = total + self.blocks[index].attn.b_O.to(total.device)
            if include_mlp_biases:
                total = total + self.blocks[index].mlp.b_out.to(total.device)
        if mlp_input:
            if layer >= self.cfg.n_layers:
                raise ValueError(f"mlp_input=True needs layer < n_layers={self.cfg.n_layers}, got {layer}")
            total = total + self.blocks[layer].attn.b_O.to(total.device)
        return total

    def set_use_attn_result(self, use: bool) -> None:
        self.cfg.use_attn_result = use

    def set_use_split_qkv_input(self, use: bool) -> None:
        self.cfg.use_split_qkv_input = use

    def set_use_attn_in(self, use: bool) -> None:
        self.cfg.use_attn_in = use

    def set_use_hook_mlp_in(self, use: bool) -> None:
        self.cfg.use_hook_mlp_in = use

    # ------------------------------------------------------------------ checks
    def add_hook(self, name: Any, hook: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(name, str):
            self._check_hook_name(name, user_named=True)
        super().add_hook(name, hook, *args, **kwargs)

    def run_with_hooks(self, *model_args: Any, fwd_hooks: list = (), bwd_hooks: list = (), **kwargs: Any) -> Any:
        for name, _ in [*fwd_hooks, *bwd_hooks]:
            if isinstance(name, str):
                self._check_hook_name(name, user_named=True)
        return super().run_with_hooks(*model_args, fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks), **kwargs)

    def _enable_hook_with_name(self, name: str, hook: Any, dir: Any) -> None:
        self._check_hook_name(name, user_named=False)
        super()._enable_hook_with_name(name, hook, dir)

    def _check_hook_name(self, name: str, user_named: bool) -> None:
        """A misspelt hook fails at once with the closest names; a hook a user names explicitly
        that cannot fire (its TransformerLens switch is off) names the switch."""
        if name not in self.hook_dict:
            import difflib

            close = difflib.get_close_matches(name, list(self.hook_dict), n=4, cutoff=0.6)
            raise KeyError(f"no hook point {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        if not user_named:
            return
        for suffix, switch in _SWITCHED_HOOKS.items():
            if name.endswith(suffix) and not getattr(self.cfg, switch):
                raise ValueError(f"{name} only runs with cfg.{switch}=True; call model.set_{switch}(True) first")

    def _check_layer(self, name: str, value: int | None, default: int) -> int:
        if value is None:
            return default
        n = self.cfg.n_layers
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{name}={value!r} must be an int layer index in 0..{n} (not {type(value).__name__})")
        value = int(value)
        if not -n <= value <= n:
            raise ValueError(f"{name}={value!r} is out of range for a model with {n} layers (use 0..{n})")
        return value % n if value < 0 else value

    def _check_tokens(self, tokens: Any, name: str = "input") -> Int[torch.Tensor, "batch pos"]:
        """Integer ids [batch, pos] (or [pos]) on the model's device; video ids must be in this bank."""
        if isinstance(tokens, str):
            raise TypeError(
                "forward takes token ids, not text; use model.prepare(video=..., prompt=...).tokens "
                "or model.to_tokens(text)"
            )
        if not isinstance(tokens, torch.Tensor) or tokens.dtype.is_floating_point or tokens.dtype.is_complex:
            raise TypeError(
                f"{name} must be integer token ids [batch, pos] (torch.long; or a float residual with "
                f"start_at_layer=), got {type(tokens).__name__} {getattr(tokens, 'dtype', '')}".rstrip()
                + ("; wrap it with torch.as_tensor(..., dtype=torch.long)" if not isinstance(tokens, torch.Tensor) else "")
            )
        if tokens.dtype in (torch.bool, torch.uint8):
            what = "a boolean mask" if tokens.dtype == torch.bool else "uint8 (pixels or a mask?)"
            raise TypeError(
                f"{name} has dtype {tokens.dtype}, which looks like {what}, not token ids; torch would index "
                "with it as a mask. Pass ids as torch.long (tokens.long() if they really are ids)"
            )
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2:
            raise ValueError(f"{name} must be token ids [batch, pos], got shape {tuple(tokens.shape)}")
        if tokens.numel() == 0:
            raise ValueError(
                f"{name} is an empty token tensor (shape {tuple(tokens.shape)}); pass at least one token per row"
            )
        tokens = tokens.long()
        if int(tokens.min()) < 0:
            raise ValueError(f"token ids must be >= 0, got {int(tokens.min())} in {name}")
        self.video_bank.check(tokens)
        return tokens.to(self.W_E.device)

    def _check_residual(self, residual: Any, start: int) -> Float[torch.Tensor, "batch pos d_model"]:
        """The residual stream entering layer `start`: a float [batch, pos, d_model], cast to the model."""
        d_model = self.cfg.d_model
        if not isinstance(residual, torch.Tensor) or not residual.dtype.is_floating_point:
            raise TypeError(
                f"with start_at_layer={start} the input is the residual stream entering that layer, a float "
                f"[batch, pos, d_model={d_model}] tensor, got {type(residual).__name__} {getattr(residual, 'dtype', '')} "
                "(token ids go in without start_at_layer; pass them as tokens= for positions)"
            )
        if residual.ndim != 3 or residual.shape[-1] != d_model or 0 in residual.shape:
            raise ValueError(
                f"with start_at_layer={start} the input must be a residual [batch, pos, d_model={d_model}], "
                f"got shape {tuple(residual.shape)}"
            )
        return residual.to(self.placement.blocks[start] if start < self.cfg.n_layers else self.placement.unembed, self.cfg.dtype)

    def _check_attention_mask(self, attention_mask: Any, batch: int, length: int) -> torch.Tensor | None:
        if attention_mask is None:
            return None
        mask = torch.as_tensor(attention_mask)
        if mask.shape != (batch, length) and not (mask.ndim == 1 and batch == 1 and mask.shape[0] == length):
            raise ValueError(
                f"attention_mask has shape {tuple(mask.shape)}; it must be [batch, pos] = {(batch, length)} "
                "like the new tokens (1 = real token, 0 = padding)"
            )
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
        return mask.reshape(batch, length).long()

    def _check_position_ids(self, position_ids: Any, batch: int, length: int) -> torch.Tensor:
        """Integer positions whose last two dims are [batch or 1, pos] ([3, ...] for M-RoPE)."""
        positions = torch.as_tensor(position_ids)
        wanted = "[3, batch, pos]" if self.cfg.mrope_section is not None else "[batch, pos]"
        if positions.is_floating_point() or positions.dtype == torch.bool:
            raise TypeError(f"position_ids must be integer positions {wanted}, got dtype {positions.dtype}")
        if positions.ndim < 1 or positions.shape[-1] != length or (positions.ndim >= 2 and positions.shape[-2] not in (1, batch)):
            raise ValueError(f"position_ids has shape {tuple(positions.shape)}; expected {wanted} with pos={length}, batch={batch}")
        return positions

    def _refuse_unmasked_left_padding(self, tokens: Int[torch.Tensor, "batch pos"]) -> None:
        """A row starting with the pad token is left padding; without a mask it would be attended to.

        Inferring the mask from pad ids is not done: a pad id can also be a real token (e.g. EOS),
        so the caller states the padding. A pad id equal to BOS cannot be told apart and is not checked.
        """
        tokenizer = self.tokenizer
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None or pad == getattr(tokenizer, "bos_token_id", None):
            return
        padded = torch.nonzero(tokens[:, 0] == pad).flatten().tolist()
        if padded:
            raise ValueError(
                f"row(s) {padded[:8]} of the tokens start with the pad token {pad} (left padding) but no "
                "attention_mask was given, so the padding would be attended to; pass "
                "attention_mask=(tokens != model.tokenizer.pad_token_id).long() (1 = real token)"
            )

    @staticmethod
    def _key_padding(
        attention_mask: torch.Tensor | None,
        past_kv_cache: KeyValueCache | None,
        batch: int,
        length: int,
        device: torch.device,
    ) -> torch.Tensor | None:
        past_padding = None if past_kv_cache is None else past_kv_cache.key_padding_mask
        if attention_mask is None and past_padding is None:
            return None
        current = torch.ones(batch, length, dtype=torch.long, device=device) if attention_mask is None else attention_mask.to(device).long()
        if past_kv_cache is None or past_kv_cache.length == 0:
            return current
        previous = past_padding if past_padding is not None else torch.ones(batch, past_kv_cache.length, dtype=torch.long, device=device)
        return torch.cat([previous, current], dim=-1)


class _PerDevice:
    """A forward's rotary tables and attention mask, copied to each device the blocks run on (once each)."""

    def __init__(self, device: torch.device, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | CausalMask):
        self._copies = {device: (cos, sin, mask)}
        self._source = (cos, sin, mask)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | CausalMask]:
        if device not in self._copies:
            cos, sin, mask = self._source
            if isinstance(mask, CausalMask):
                mask = CausalMask(mask.batch, mask.n_tokens, mask.dtype, device)
            else:
                mask = mask.to(device)
            self._copies[device] = (cos.to(device), sin.to(device), mask)
        return self._copies[device]
