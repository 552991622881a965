"""The video bank: projected video tokens registered with the model, referenced by token ids.

Token tensors stay plain integer tensors (TransformerLens's `patching` only passes
`corrupted_tokens`), yet clean and corrupted runs can carry different videos: each registered
video gets a contiguous block of ids at or above `d_vocab`, and the embedding step looks those
ids up here instead of in `W_E`. The bank also remembers every video token's (frame, row, col),
from which M-RoPE positions and the token layout are derived.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import nn


@dataclass(frozen=True)
class BankedVideo:
    """One registered video: ids [first_id, first_id + n_tokens) and each token's (frame, row, col)."""

    first_id: int
    n_tokens: int
    grid: Int[torch.Tensor, "n_tokens 3"]  # (frame or tubelet, row, col), in token order
    content_key: str

    @property
    def token_ids(self) -> Int[torch.Tensor, "n_tokens"]:
        return torch.arange(self.first_id, self.first_id + self.n_tokens)


class VideoBank(nn.Module):
    """Stores projected video tokens [n_banked, d_model] (+ optional per-token extras) as buffers."""

    def __init__(self, d_vocab: int, d_model: int, dtype: torch.dtype):
        super().__init__()
        self.d_vocab = d_vocab
        self.register_buffer("embeddings", torch.zeros(0, d_model, dtype=dtype), persistent=False)
        self.register_buffer("grid", torch.zeros(0, 3, dtype=torch.long), persistent=False)
        self.register_buffer("video_index", torch.zeros(0, dtype=torch.long), persistent=False)
        self._extra_names: list[str] = []  # per-token extras (e.g. deepstack features), kept as buffers
        self.videos: list[BankedVideo] = []
        self._by_key: dict[str, BankedVideo] = {}

    @property
    def extras(self) -> dict[str, torch.Tensor]:
        """name -> [n_banked, ...] per-token extras, e.g. "deepstack" [n_banked, levels, d_model]."""
        return {name: getattr(self, f"extra_{name}") for name in self._extra_names}

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def register(
        self,
        embeddings: Float[torch.Tensor, "n_tokens d_model"],
        grid: Int[torch.Tensor, "n_tokens 3"],
        content_key: str | None = None,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> BankedVideo:
        """Add one video's projected tokens; the same content key returns the earlier entry."""
        if content_key is not None and content_key in self._by_key:
            return self._by_key[content_key]
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embeddings.shape[1]:
            raise ValueError(
                f"video embeddings must be [n_tokens, d_model={self.embeddings.shape[1]}], got {tuple(embeddings.shape)}"
            )
        if grid.shape != (embeddings.shape[0], 3):
            raise ValueError(f"grid must be [n_tokens={embeddings.shape[0]}, 3], got {tuple(grid.shape)}")
        entry = BankedVideo(
            first_id=self.d_vocab + len(self),
            n_tokens=embeddings.shape[0],
            grid=grid.detach().cpu().long(),
            content_key=content_key or f"video-{len(self.videos)}",
        )
        device = self.embeddings.device
        self.embeddings = torch.cat([self.embeddings, embeddings.detach().to(device, self.embeddings.dtype)])
        self.grid = torch.cat([self.grid, grid.to(device).long()])
        self.video_index = torch.cat(
            [self.video_index, torch.full((entry.n_tokens,), len(self.videos), device=device)]
        )
        for name, value in (extras or {}).items():
            if value.shape[0] != entry.n_tokens:
                raise ValueError(f"extra {name!r} has {value.shape[0]} rows for {entry.n_tokens} video tokens")
            previous = self.extras.get(name, value.new_zeros((len(self) - entry.n_tokens, *value.shape[1:])))
            if name not in self._extra_names:
                self._extra_names.append(name)
            self.register_buffer(f"extra_{name}", torch.cat([previous.to(device), value.detach().to(device)]), persistent=False)
        self.videos.append(entry)
        self._by_key[entry.content_key] = entry
        return entry

    def clear(self) -> None:
        """Forget every video (token tensors prepared before become invalid)."""
        self.embeddings = self.embeddings[:0]
        self.grid = self.grid[:0]
        self.video_index = self.video_index[:0]
        for name in self._extra_names:
            delattr(self, f"extra_{name}")
        self._extra_names.clear()
        self.videos.clear()
        self._by_key.clear()

    def is_video(self, tokens: Int[torch.Tensor, "..."]) -> torch.Tensor:
        return tokens >= self.d_vocab

    def lookup(self, tokens: Int[torch.Tensor, "n"]) -> Float[torch.Tensor, "n d_model"]:
        """Embeddings of banked ids; unknown ids raise, naming the valid range."""
        rows = tokens - self.d_vocab
        if rows.numel() and (int(rows.max()) >= len(self) or int(rows.min()) < 0):
            raise ValueError(
                f"token id {int(tokens.max())} is neither in the vocabulary [0, {self.d_vocab}) nor a "
                f"registered video token [{self.d_vocab}, {self.d_vocab + len(self)}); prepare the input "
                "with this model's `prepare` (the video bank was cleared or belongs to another model)"
            )
        return self.embeddings[rows]


def content_key(pixel_values: torch.Tensor, *extra: object) -> str:
    """A hash of the preprocessed pixels (and settings), so re-preparing a video reuses its ids."""
    digest = hashlib.sha1(pixel_values.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr((tuple(pixel_values.shape), str(pixel_values.dtype), extra)).encode())
    return digest.hexdigest()
