"""The video bank: projected video tokens registered with the model, referenced by token ids.

Token tensors stay plain integer tensors (TransformerLens's `patching` only passes
`corrupted_tokens`), yet clean and corrupted runs can carry different videos: each registered
video gets a contiguous block of ids, and the embedding step looks those ids up here instead of
in `W_E`. The bank also remembers every video token's (frame, row, col), from which M-RoPE
positions and the token layout are derived.

How video ids are handed out (so that a token tensor never silently reads the wrong video):

- Every id comes from one counter per Python process that only grows, so an id is never handed
  out twice: not after `clear()`, and not by two models (two banks) in the same process.
- The counter starts at a random multiple of 2**32 (between 2**32 and 2**52), so video ids are far
  above any vocabulary (a video id is never read as a text id by a model with a larger vocabulary),
  stay below 2**53 (exact as float64 and in JSON), and token tensors saved by another process fall
  outside this process's ids except with probability about 2**-20 per process.
- Each bank knows its *live* id ranges (registered, not freed) and its *freed* ones (by `clear()`
  or at the end of a `scope()`). An id in a freed range is reported as stale; any other unknown id
  as coming from another model's bank. Both are errors: nothing is ever looked up by id arithmetic alone.
- A `copy.deepcopy` of a model shares the ids of the videos it already held (same embeddings, so
  same meaning); videos registered afterwards get fresh ids in each copy, unknown to the other.

Text ids are not checked against the tokenizer they came from; that cannot be detected.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from jaxtyping import Float, Int
from torch import nn

_ID_BLOCK = 2**32  # ids one process may hand out; the process's first id is a random multiple of it
_NAMESPACES = 2**20  # random first ids: 2**32 * [1, 2**20], so every id stays below 2**53


class _IdCounter:
    """The process-wide source of video ids: starts at a random 2**32-multiple, only grows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.first = _ID_BLOCK * random.SystemRandom().randint(1, _NAMESPACES - 1)
        self._next = self.first

    def next_id(self) -> int:
        """The id the next registration (in any bank of this process) will start at."""
        with self._lock:
            return self._next

    def take(self, n: int) -> int:
        with self._lock:
            first, self._next = self._next, self._next + n
        if self._next - self.first > _ID_BLOCK:
            raise RuntimeError(f"this process registered more than {_ID_BLOCK} video tokens; start a new process")
        return first


_IDS = _IdCounter()


class VideoIdError(ValueError):
    """A token tensor holds a video id this model's bank does not hold (freed, or another model's)."""


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
    """Stores projected video tokens [n_banked, d_model] (+ optional per-token extras) as buffers.

    Row i of `embeddings`, `grid`, `video_index` and the extras belongs to the i-th live video
    token in registration order; `rows(ids)` maps ids to rows and refuses ids it does not hold.
    Rows live in buffers with spare capacity that doubles when full, so registering a video costs
    amortised O(its tokens), not a copy of the whole bank. `scope()` frees what was registered
    inside it, so a long run holds only the videos of the example it is working on.
    """

    def __init__(self, d_vocab: int, d_model: int, dtype: torch.dtype):
        super().__init__()
        if d_vocab >= _ID_BLOCK:
            raise ValueError(f"d_vocab={d_vocab} must be below {_ID_BLOCK}, where video ids start")
        self.d_vocab = d_vocab
        self.d_model = d_model
        self._used = 0  # rows in use; the buffers below hold at least this many
        # Buffers with spare rows; the public views (`embeddings`, `grid`, ...) are their first `_used` rows.
        self.register_buffer("_embeddings", torch.zeros(0, d_model, dtype=dtype), persistent=False)
        self.register_buffer("_grid", torch.zeros(0, 3, dtype=torch.long), persistent=False)
        self.register_buffer("_video_index", torch.zeros(0, dtype=torch.long), persistent=False)
        self._extra_names: list[str] = []  # per-token extras (e.g. deepstack features), kept as buffers
        self.videos: list[BankedVideo] = []
        self._by_key: dict[str, BankedVideo] = {}
        self._freed: list[tuple[int, int]] = []  # [first, end) id ranges freed by clear() or a scope, ascending
        self._registered = 0  # videos ever registered: each video's `video_index` value

    @property
    def embeddings(self) -> Float[torch.Tensor, "n_banked d_model"]:
        return self._embeddings[: self._used]

    @property
    def grid(self) -> Int[torch.Tensor, "n_banked 3"]:
        """Each banked token's (frame or tubelet, row, col)."""
        return self._grid[: self._used]

    @property
    def video_index(self) -> Int[torch.Tensor, "n_banked"]:
        """A number per banked token, the same for the tokens of one video and never shared by two videos."""
        return self._video_index[: self._used]

    @property
    def extras(self) -> dict[str, torch.Tensor]:
        """name -> [n_banked, ...] per-token extras, e.g. "deepstack" [n_banked, levels, d_model]."""
        return {name: getattr(self, f"_extra_{name}")[: self._used] for name in self._extra_names}

    @property
    def nbytes(self) -> int:
        """Bytes the bank's buffers hold, spare capacity included."""
        buffers = [self._embeddings, self._grid, self._video_index, *(getattr(self, f"_extra_{n}") for n in self._extra_names)]
        return sum(buffer.numel() * buffer.element_size() for buffer in buffers)

    def __len__(self) -> int:
        return self._used

    def register(
        self,
        embeddings: Float[torch.Tensor, "n_tokens d_model"],
        grid: Int[torch.Tensor, "n_tokens 3"],
        content_key: str | None = None,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> BankedVideo:
        """Add one video's projected tokens under fresh ids; the same content key returns the earlier entry."""
        if content_key is not None and content_key in self._by_key:
            return self._by_key[content_key]
        if embeddings.ndim != 2 or embeddings.shape[1] != self.d_model:
            raise ValueError(
                f"video embeddings must be [n_tokens, d_model={self.d_model}], got {tuple(embeddings.shape)}"
            )
        if grid.shape != (embeddings.shape[0], 3):
            raise ValueError(f"grid must be [n_tokens={embeddings.shape[0]}, 3], got {tuple(grid.shape)}")
        if embeddings.is_floating_point() and not bool(torch.isfinite(embeddings).all()):
            raise ValueError(
                f"the video's {embeddings.shape[0]} projected tokens contain NaN or inf (an overflow in the vision "
                f"tower at {embeddings.dtype}?); load the model in float32 or bfloat16"
            )
        n_tokens = embeddings.shape[0]
        extras = extras or {}
        for name, value in extras.items():
            if value.shape[0] != n_tokens:
                raise ValueError(f"extra {name!r} has {value.shape[0]} rows for {n_tokens} video tokens")
        lacking = [name for name in self._extra_names if name not in extras]
        if lacking:
            raise ValueError(
                f"the videos in this bank carry extras {lacking} that this video lacks; pass extras={{...}} "
                "with them (or clear() the bank first)"
            )
        first_id = _IDS.take(n_tokens)
        entry = BankedVideo(
            first_id=first_id, n_tokens=n_tokens, grid=grid.detach().cpu().long(),
            content_key=content_key or f"video-{first_id}",
        )
        for name, value in extras.items():
            if name not in self._extra_names:  # earlier videos read zeros for a new extra
                self._extra_names.append(name)
                storage = value.new_zeros((self._embeddings.shape[0], *value.shape[1:]), device=self._embeddings.device)
                self.register_buffer(f"_extra_{name}", storage, persistent=False)
        self._reserve(self._used + n_tokens)
        rows = slice(self._used, self._used + n_tokens)
        self._embeddings[rows] = embeddings.detach().to(self._embeddings.device, self._embeddings.dtype)
        self._grid[rows] = grid.to(self._grid.device).long()
        self._video_index[rows] = self._registered
        for name, value in extras.items():
            storage = getattr(self, f"_extra_{name}")
            storage[rows] = value.detach().to(storage.device, storage.dtype)
        self._used += n_tokens
        self._registered += 1
        self.videos.append(entry)
        self._by_key[entry.content_key] = entry
        return entry

    def _reserve(self, rows: int) -> None:
        """Grow every buffer to hold at least `rows` rows, doubling, so n registrations cost O(total tokens)."""
        capacity = self._embeddings.shape[0]
        if rows <= capacity:
            return
        capacity = max(rows, 2 * capacity, 256)
        for name in ["_embeddings", "_grid", "_video_index", *(f"_extra_{n}" for n in self._extra_names)]:
            old = getattr(self, name)
            grown = old.new_zeros((capacity, *old.shape[1:]))
            grown[: self._used] = old[: self._used]
            setattr(self, name, grown)

    @contextmanager
    def scope(self) -> Iterator["VideoBank"]:
        """Free, on exit, every video registered while the block was open (videos from before stay).

        Prepared inputs made inside the block are stale afterwards and raise a `VideoIdError` when
        used. Preparing a video already in the bank before the block (same content) reuses it, so it
        is not freed. Scopes nest; the videos a block frees are always the newest ones.
        """
        mark = _IDS.next_id()
        try:
            yield self
        finally:
            self._free_newest(next((i for i, video in enumerate(self.videos) if video.first_id >= mark), len(self.videos)))

    def clear(self) -> None:
        """Forget every video; token tensors prepared before then raise a `VideoIdError` when used."""
        self._free_newest(0)
        for name in self._extra_names:
            delattr(self, f"_extra_{name}")
        self._extra_names.clear()

    def _free_newest(self, first: int) -> None:
        """Drop `videos[first:]` (registered last, so their rows are the bank's last) and mark their ids freed."""
        for video in self.videos[first:]:
            self._mark_freed(video.first_id, video.first_id + video.n_tokens)
            del self._by_key[video.content_key]
            self._used -= video.n_tokens
        del self.videos[first:]

    def is_video(self, tokens: Int[torch.Tensor, "..."]) -> torch.Tensor:
        """Which ids are video ids (at or above `d_vocab`), whether or not this bank holds them."""
        return tokens >= self.d_vocab

    def rows(self, ids: Int[torch.Tensor, "n"]) -> Int[torch.Tensor, "n"]:
        """The bank row of each video id; an id this bank does not hold raises a `VideoIdError`."""
        ids = ids.long()
        if ids.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=ids.device)
        if not self.videos:
            self._raise_unknown(ids)
        starts = torch.tensor([video.first_id for video in self.videos], device=ids.device)
        sizes = torch.tensor([video.n_tokens for video in self.videos], device=ids.device)
        which = (torch.searchsorted(starts, ids, right=True) - 1).clamp(min=0)  # the video starting at or below
        within = ids - starts[which]
        if not bool(((within >= 0) & (within < sizes[which])).all()):
            self._raise_unknown(ids[(within < 0) | (within >= sizes[which])])
        return (torch.cumsum(sizes, 0) - sizes)[which] + within

    def check(self, tokens: Int[torch.Tensor, "..."]) -> None:
        """Raise a `VideoIdError` unless every video id in `tokens` is held by this bank."""
        self.rows(tokens[self.is_video(tokens)])

    def lookup(self, tokens: Int[torch.Tensor, "n"]) -> Float[torch.Tensor, "n d_model"]:
        """Embeddings of banked ids; ids this bank does not hold raise, saying why."""
        return self.embeddings[self.rows(tokens).to(self.embeddings.device)]

    def _mark_freed(self, first: int, end: int) -> None:
        if self._freed and self._freed[-1][1] == first:
            self._freed[-1] = (self._freed[-1][0], end)
        else:
            bisect.insort(self._freed, (first, end))

    def was_freed(self, token_id: int) -> bool:
        """Whether `token_id` was one of this bank's ids before a `clear()` or the end of its scope."""
        index = bisect.bisect_right(self._freed, (token_id, float("inf"))) - 1
        return index >= 0 and self._freed[index][0] <= token_id < self._freed[index][1]

    def _raise_unknown(self, unknown: Int[torch.Tensor, "n"]) -> None:
        token_id = int(unknown[0])
        others = f" (and {unknown.numel() - 1} more)" if unknown.numel() > 1 else ""
        if token_id < _ID_BLOCK:
            raise VideoIdError(
                f"token id {token_id}{others} is out of range: text ids are [0, {self.d_vocab}) and video ids "
                "(>= 2**32) come from this model's prepare(...); the tokens are not this model's"
            )
        if self.was_freed(token_id):
            raise VideoIdError(
                f"video token id {token_id}{others} was freed by video_bank.clear() or at the end of the "
                "video_bank.scope() it was prepared in; such tokens are stale: prepare the input again with "
                "model.prepare(...)"
            )
        raise VideoIdError(
            f"video token id {token_id}{others} is not in this model's video bank (which holds "
            f"{len(self.videos)} video(s)): the tokens were prepared by another model or in another "
            "process; video ids belong to the model that prepared them, so prepare the input with "
            "this model's prepare(...)"
        )


def content_key(pixel_values: torch.Tensor, *extra: object) -> str:
    """A hash of the preprocessed pixels (and settings), so re-preparing a video reuses its ids."""
    digest = hashlib.sha1(pixel_values.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr((tuple(pixel_values.shape), str(pixel_values.dtype), extra)).encode())
    return digest.hexdigest()
