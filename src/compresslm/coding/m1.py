"""M1, the byte-level model that drives the window coder: its deterministic inference path and its
numerics fingerprint (docs/design.md#m1-numerics). Training is in :mod:`compresslm.coding.m1_train`.

Two numerics share one interface. :class:`ExactM1` (checkpoints whose config records
``"numerics": "int8-exact-v1"``, the default of ``m1 train`` and the output of ``m1 quantize``) is
defined in integers (docs/numerics.md, :mod:`compresslm.coding.exact`): its tables are the same on
every machine, so its files decode anywhere. :class:`M1` below is the float path of earlier
checkpoints, kept so their files keep decoding where their fingerprint matches; the rest of this
docstring describes how that path is made deterministic on one machine.

**Inference for coding.** Encoder and decoder compute M1's tables with the *same* function,
:class:`M1Session.step`: one new position per row per step, keys and values kept in a cache of
``max_window_bytes`` positions, every row restarted at each window. The encoder advances each row
one byte at a time exactly like the decoder does, so the two run identical operations on identical
shapes; what remains to hold is that a row's result does not depend on the other rows, on where in
the batch it sits, or on the machine's thread count:

* torch runs **single-threaded** while any session is open, so no op's rounding depends on the
  thread count. Cores are used by **lanes** instead (:attr:`M1.lanes`, one per thread by default):
  the coder splits its rows into one session per lane and steps each from its own thread. Torch
  releases the GIL inside every op, so one lane's Python coder runs while another lane computes, and
  a loaded machine costs us no OpenMP barrier waits (a 2-thread GEMM whose second thread is
  descheduled waits a whole time slice: 10 ms per op here);
* linear layers are GEMMs over ``(rows, d)`` with ``rows`` padded to a multiple of
  :data:`ROW_MULTIPLE`: MKL gives bit-identical rows for any row count >= 12, but takes another code
  path (other rounding) for 1-3 rows and for 5-11 rows at some thread counts (measured on this
  machine's torch 2.13 CPU build) — hence the padding;
* attention is a batched (1 x hs) @ (hs x n) product over a fixed number n of cached positions
  chosen by the row's own position alone (the first 16-position page while the row is inside it,
  all ``max_len`` positions after that), masked to the row's positions: the cache beyond them gets
  weight exactly +0.0 and adds exactly nothing;
* LayerNorm, GELU and softmax are row-wise.

**Waste.** A window's first table depends on nothing (its context is BOS alone), so it is
computed once per session (:attr:`M1Session.start_table`, with position 0's keys and values) and a
window of n bytes costs n positions, not n + 1: the coder feeds the start table itself and sends
``RESTART + b``. Rows that finish go idle and the cache is compacted when half of them are (so the
tail of a batch stops paying for them), and a new position's keys and values are scattered into the
cache with one flat-index copy per page and layer.

Tests check the consequences (same tables for batch sizes 1 and 64, lanes 1 and 2, any other rows;
RESTART equal to START then the byte) and that this path agrees with ``Transformer.forward`` to
float32 rounding. Compared with the obvious reference (a padded full-row forward per window in the
encoder, one position at a time in the decoder), this needs no proof that two different paths agree,
and it computes only the positions a window uses (n for n bytes) instead of ``max_window_bytes``:
the padded reference wastes ~90% of its positions at b = 16, where windows hold ~4 bytes. The
numerics are those of the earlier one-thread, START-computing path: the fingerprints of
``bench-out/m1-3m`` and ``m1-tiny`` are unchanged, so .clm files written before decode.

**Fingerprint.** :func:`fingerprint` hashes the tables of a fixed probe; the .clm container
stores it next to the weights' sha256, and decompression recomputes both, so a different model or
different numerics on another machine is a clear error instead of silent garbage.

**BOS.** The vocabulary is the 256 byte values (no id above them to spare, see
``models.data.bytes_to_tokens``); the NUL byte, the training stream's document separator, is fed
at position 0 of every window as "start of context".
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from compresslm.coding.intervals import N_SYMBOLS, quantize
from compresslm.coding.window_coder import IDLE, RESTART, START
from compresslm.errors import ConfigError, IntegrityError
from compresslm.models.checkpoint import load_model, weights_sha256
from compresslm.models.transformer import Transformer

BOS = 0
ROW_MULTIPLE = 16
NEAR_POSITIONS = 16  # the first cache page: most window positions at b = 16 fall inside it
FINGERPRINT_VERSION = 1

# The probe behind the numerics fingerprint: prose, code, Unicode, a long run and raw bytes, so
# peaked and flat distributions, short and long contexts all enter the hash.
_PROBE_TEXTS: tuple[bytes, ...] = (
    b"The three currently living species are: African savanna elephants, African forest elephants, "
    b"and the Asian elephants.",
    b"def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "Naïve café — 日本語のテキスト, Ελληνικά, emoji 🙂 and math ∑ x² ≤ ∞.".encode(),
    b"                                                                                        end",
    bytes(range(0, 256, 3)),
    b'{"id": 17, "text": "Lorem ipsum dolor sit amet, consectetur adipiscing elit."}\n',
)


@dataclass
class StepTimings:
    """Where coding time goes inside M1 (accumulated over sessions; the rest is the Python coder)."""

    forward_s: float = 0.0
    quantize_s: float = 0.0
    steps: int = 0
    row_positions: int = 0  # positions computed, padding rows included


_threads_lock = threading.Lock()
_threads_state = {"sessions": 0, "before": 1}


def _single_threaded_ops(delta: int) -> None:
    """Count open sessions; torch runs single-threaded while any is open (set by the first, restored
    by the last: ``torch.set_num_threads`` rebuilds the OpenMP pool, which costs more than a step).
    Lane threads started after the first session opens take the count of 1 on their first op."""
    with _threads_lock:
        state = _threads_state
        if delta > 0 and state["sessions"] == 0:
            state["before"] = torch.get_num_threads()
            if state["before"] != 1:
                torch.set_num_threads(1)
        state["sessions"] += delta
        if delta < 0 and state["sessions"] == 0 and state["before"] != 1:
            torch.set_num_threads(state["before"])


def place_rows(
    phys: np.ndarray,
    rows: int,
    active: np.ndarray,
    opening: np.ndarray,
    min_rows: int,
    resize: Callable[[int, np.ndarray], int],
) -> None:
    """Give every active logical row of a session a physical row of its KV cache, in place in
    ``phys`` (logical -> physical, -1 for none). Shared by the float and the exact session.

    When active rows outgrow the ``rows`` physical ones, or at most half of them are in use (and
    there are more than ``min_rows``), ``resize(n_active, kept)`` rebuilds the cache with the old
    physical rows ``kept`` copied, in order, to the first new ones, and returns the new row count:
    copying a row's cache is exact, and the tail of a batch stops paying for finished rows. A row
    with no physical row may only be opened by a START (or restart) token: anything else would
    have lost its context."""
    phys[~active] = -1
    n_active = int(active.sum())
    if n_active > rows or (rows > min_rows and n_active <= rows // 2):
        kept = np.flatnonzero(active & (phys >= 0))
        rows = resize(n_active, phys[kept])
        phys[:] = -1
        phys[kept] = np.arange(len(kept))
    homeless = np.flatnonzero(active & (phys < 0))
    if len(homeless):
        if not opening[homeless].all():
            raise ConfigError("a row lost its context: only a START token may open an idle row")
        used = np.zeros(rows, dtype=bool)
        used[phys[phys >= 0]] = True
        phys[homeless] = np.flatnonzero(~used)[: len(homeless)]


def _padded_rows(n_rows: int) -> int:
    return max(ROW_MULTIPLE, -(-n_rows // ROW_MULTIPLE) * ROW_MULTIPLE)


class M1:
    """A trained :class:`Transformer` as a :class:`~compresslm.coding.window_coder.FrequencyModel`.

    ``threads``: coding lanes, each a thread stepping its own session with single-threaded torch
    ops (None: torch's thread count, by default all cores). See the module docstring for why.
    ``sha256``: the weights' hash (computed when not given).
    """

    def __init__(
        self,
        model: Transformer,
        *,
        precision: int = 14,
        threads: int | None = None,
        sha256: str | None = None,
        path: str | None = None,
    ) -> None:
        if model.config.vocab_size < N_SYMBOLS:
            raise ConfigError(
                f"M1 needs a vocabulary of at least 256 bytes, the model has {model.config.vocab_size}"
            )
        self.model = model.to("cpu").float().eval()
        self.precision = precision
        self.threads = threads
        self.lanes = max(1, threads or torch.get_num_threads())
        self.sha256 = sha256 or weights_sha256(model)
        self.path = path
        self.timings = StepTimings()
        # Probe results per cache length: the weights never change after construction.
        self._fingerprints: dict[int, str] = {}
        self._independent: set[tuple[int, int]] = set()

    exact = False  # the float path: tables depend on the machine's float rounding (fingerprinted)
    numerics = "float32"

    @classmethod
    def load(cls, directory: str | Path, **kwargs: Any) -> M1:
        """Load a checkpoint written by ``m1 train`` / ``m1 quantize`` / ``save_model`` (hash
        verified on load): an :class:`ExactM1` when its config records exact numerics, else the
        float M1 (checkpoints from before the exact M1)."""
        from compresslm.coding.exact import NUMERICS, ExactModel, numerics_of
        from compresslm.models.checkpoint import read_checkpoint_meta

        meta = read_checkpoint_meta(directory)
        mode = numerics_of(meta)
        path = str(Path(directory).resolve())
        if mode == NUMERICS:
            exact = ExactModel.load(directory, meta)
            return ExactM1(exact, sha256=meta["weights_sha256"], path=path, **kwargs)
        if mode != cls.numerics:
            raise ConfigError(
                f"{directory}: unknown M1 numerics {mode!r} (this build knows float32, {NUMERICS})"
            )
        model, _, _ = load_model(directory)
        return cls(model, sha256=weights_sha256(directory), path=path, **kwargs)

    @property
    def max_context(self) -> int:
        """Most positions a window row can use (the model's ``max_seq_len``)."""
        return self.model.config.max_seq_len

    @property
    def n_params(self) -> int:
        """Non-embedding parameters: the paper's N in "2 N FLOPs per byte"."""
        return self.model.n_params(non_embedding=True)

    def session(self, n_rows: int, max_len: int) -> M1Session:
        return M1Session(self, n_rows, max_len)

    @staticmethod
    def lane_started() -> None:
        """Run first in every lane thread (``run_lanes``): it applies torch's thread count to this
        thread. Part of that setting is per thread (OpenMP's thread count and MKL's thread-local
        one), and a new thread starts from the defaults, so without this each lane's GEMMs fork a
        team of all cores' threads that fight the other lanes (measured: a lane's GEMMs 3-10x
        slower on 2 cores)."""
        torch.set_num_threads(torch.get_num_threads())


class M1Session:
    """``n_rows`` window rows (padded to a multiple of :data:`ROW_MULTIPLE`), each with a KV cache
    of ``max_len`` positions; see the module docstring for why this path is deterministic.

    ``start_table`` is the table every window starts with (its context is BOS alone), computed once
    through the same forward; START costs no step, and ``RESTART + b`` opens a window and appends
    ``b`` in one step (see :mod:`compresslm.coding.window_coder`).
    """

    def __init__(self, m1: M1, n_rows: int, max_len: int) -> None:
        if max_len > m1.max_context:
            raise ConfigError(
                f"max_window_bytes {max_len} exceeds the model's context of {m1.max_context} positions"
            )
        cfg = m1.model.config
        self.m1 = m1
        self.n_rows = n_rows
        self.max_len = max_len
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        # The cache is paged: positions [0, near), and all positions [0, max_len) again (the first
        # ``near`` held twice, so a row past the near page reads one page). Keys are stored transposed,
        # (hs, positions) per head, so q @ K reads them contiguously (a transposed operand is slower,
        # and rounds differently: the numerics fingerprint would change). Rows are never cleared: a
        # restarted row's old keys and values sit beyond its position, where the mask gives them
        # weight exactly +0.0, and 0 * v adds exactly nothing to a sum.
        self.near = min(NEAR_POSITIONS, max_len)
        self.n_layers = cfg.n_layers
        # Logical rows (what the caller indexes) live in physical rows of the cache; a row that goes
        # idle gives its physical row up, and when half of them are free the cache is compacted, so
        # the tail of a batch does not keep computing finished rows. Copying a row's cache is exact
        # and rows never influence each other, so where a row lives changes none of its results.
        self.phys = np.full(n_rows, -1, dtype=np.int64)
        self.key_index = torch.arange(max_len)
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.timings = m1.timings
        self._closed = False
        _single_threaded_ops(+1)
        self._start_state()
        self._allocate(_padded_rows(n_rows))

    def _start_state(self) -> None:
        """Position 0 (BOS) of every window: its table and its keys and values per layer, from one
        forward of :data:`ROW_MULTIPLE` rows (rows are independent, so any row's result is this)."""
        self._allocate(ROW_MULTIPLE)
        pos = torch.zeros(ROW_MULTIPLE, dtype=torch.long)
        with torch.inference_mode():
            probs = self._forward(torch.full((ROW_MULTIPLE,), BOS), pos)
        self.start_table = quantize(probs[0], self.m1.precision)
        self.start_table.setflags(write=False)
        # (layers, 1, C): position 0's keys and values, copied into every window that opens
        self.start_keys = self.keys_near[:, 0, :, :, 0].reshape(self.n_layers, 1, -1).clone()
        self.start_values = self.values_near[:, 0, :, 0, :].reshape(self.n_layers, 1, -1).clone()

    def _allocate(self, rows: int, keep: torch.Tensor | None = None) -> None:
        """(Re)build the cache with ``rows`` physical rows; ``keep`` lists old rows copied, in order,
        into the first new ones."""
        shape = (self.n_layers, rows, self.n_heads)
        full = self.max_len
        fresh = {
            "keys_near": torch.zeros(*shape, self.head_dim, self.near),
            "values_near": torch.zeros(*shape, self.near, self.head_dim),
            "keys_full": torch.zeros(*shape, self.head_dim, full),
            "values_full": torch.zeros(*shape, full, self.head_dim),
        }
        pos = torch.zeros(rows, dtype=torch.long)
        if keep is not None and len(keep):
            for name, tensor in fresh.items():
                tensor[:, : len(keep)] = getattr(self, name).index_select(1, keep)
            pos[: len(keep)] = self.pos[keep]
        for name, tensor in fresh.items():
            setattr(self, name, tensor)
        self.pos = pos
        self.rows = rows
        # Where row 0, position 0 of each layer's head vectors go, (layers, nh * hs), in a page viewed
        # flat: a value is a run of hs floats (flat index / hs), a key a column of its transposed page.
        layers = torch.arange(self.n_layers)[:, None]
        self._offsets = {
            n: (
                (
                    layers * rows * self.n_heads * self.head_dim
                    + torch.arange(self.n_heads * self.head_dim)[None]
                )
                * n,
                layers * rows * self.n_heads * n + torch.arange(self.n_heads)[None] * n,
            )
            for n in (self.near, full)
        }

    def _place(self, active: np.ndarray, starting: np.ndarray) -> None:
        """Give every active logical row a physical row, compacting or growing the cache."""
        place_rows(self.phys, self.rows, active, starting, ROW_MULTIPLE, self._resize)

    def _resize(self, n_active: int, keep: np.ndarray) -> int:
        self._allocate(_padded_rows(n_active), torch.from_numpy(keep))
        return self.rows

    def close(self) -> None:
        """Restore torch's thread count once the last open session closes."""
        if not self._closed:
            self._closed = True
            _single_threaded_ops(-1)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        if len(tokens) != self.n_rows:
            raise ConfigError(f"step needs {self.n_rows} tokens, got {len(tokens)}")
        tokens = np.asarray(tokens, dtype=np.int64)
        active = tokens != IDLE
        tables = np.zeros((self.n_rows, N_SYMBOLS + 1), dtype=np.int64)
        if not active.any():
            return tables
        restart = tokens >= RESTART
        opening = (tokens == START) | restart
        self._place(active, opening)
        if opening.any():  # position 0 of a new window: the constant BOS keys and values
            self._open(torch.from_numpy(self.phys[opening]))
            tables[tokens == START] = self.start_table
        computing = active & (tokens != START)
        if not computing.any():
            return tables
        rows = self.phys[computing]
        rows_t = torch.from_numpy(rows)
        # Rows with nothing to compute (idle, or START alone) run BOS and store their keys: an idle
        # row's cache is dead, and a START row is written again below.
        ids = torch.zeros(self.rows, dtype=torch.long)
        ids[rows_t] = torch.from_numpy(np.where(restart, tokens - RESTART, tokens)[computing])
        # Rows with nothing to compute (dead, padding, or START alone) take the last position when
        # every busy row is past the near page (so all are, and the full page is read in place),
        # else position 0 (so they cost no attention over the full page).
        busy = self.pos[rows_t] + 1
        if int(busy.max()) >= self.max_len:
            raise ConfigError(f"a window row ran past its {self.max_len} positions")
        filler = self.max_len - 1 if int(busy.min()) >= self.near else 0
        pos = torch.full((self.rows,), filler, dtype=torch.long)
        pos[rows_t] = busy
        self.pos = pos
        t0 = time.perf_counter()
        with torch.inference_mode():
            probs = self._forward(ids, pos)
        t1 = time.perf_counter()
        if (tokens == START).any():
            self._open(torch.from_numpy(self.phys[tokens == START]))
        tables[computing] = quantize(probs[rows], self.m1.precision)
        timings = self.timings
        timings.forward_s += t1 - t0
        timings.quantize_s += time.perf_counter() - t1
        timings.steps += 1
        timings.row_positions += self.rows
        return tables

    def _open(self, rows: torch.Tensor) -> None:
        """Start a window in physical ``rows``: position 0 holds BOS's constant keys and values."""
        self.pos[rows] = 0
        n = len(rows)
        for sel, keys, values, key_at, value_at in self._targets(rows, torch.zeros(n, dtype=torch.long)):
            k, v = self.start_keys.expand(-1, n, -1), self.start_values.expand(-1, n, -1)
            if sel is not None:
                k, v = k[:, sel], v[:, sel]
            keys.view(-1).index_copy_(0, key_at.reshape(-1), k.reshape(-1))
            values.view(-1, self.head_dim).index_copy_(0, value_at.reshape(-1), v.reshape(-1, self.head_dim))

    def _targets(
        self, rows: torch.Tensor, pos: torch.Tensor
    ) -> list[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Where the head vectors of physical ``rows`` at positions ``pos`` (one per row) go: per page,
        ``(selected rows or None for all, keys, values, key_at, value_at)``, with flat indices
        ``key_at`` (layers, n * nh * hs) into ``keys`` and ``value_at`` (layers, n * nh) into
        ``values`` viewed as (-1, hs). Every position goes to the full page, those below ``near``
        also to the near page. Writes are exact copies: where other rows' keys sit cannot change a
        row's numbers, so the written set may vary from step to step."""
        nh, hs, near = self.n_heads, self.head_dim, self.near
        in_near = pos < near
        all_near = bool(in_near.all())
        out = []
        for page, sel, n in (("near", in_near, near), ("full", None, self.max_len)):
            r, p = (rows, pos) if sel is None or all_near else (rows[sel], pos[sel])
            if not len(r):
                continue
            key_at, value_at = self._offsets[n]
            key_at = (key_at[:, None, :] + (r * (nh * hs * n) + p)[None, :, None]).flatten(1)
            value_at = (value_at[:, None, :] + (r * (nh * n) + p)[None, :, None]).flatten(1)
            out.append(
                (
                    None if sel is None or all_near else sel,
                    getattr(self, f"keys_{page}"),
                    getattr(self, f"values_{page}"),
                    key_at,
                    value_at,
                )
            )
        return out

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor) -> np.ndarray:
        """One position per physical row, keys and values stored at it. Attention is computed over the
        ``near`` page for every row, and again over all ``max_len`` positions for the rows past the
        near page, whose results replace the first. So each row's arithmetic depends only on its own
        position, never on which other rows share the step; most rows (windows hold a few bytes)
        read 16 cached positions, not 64."""
        model = self.m1.model
        R, nh, hs, near = self.rows, self.n_heads, self.head_dim, self.near
        long = torch.nonzero(pos >= near).view(-1)
        targets = self._targets(torch.arange(R), pos)
        x = model.wte(ids) + model.wpe(pos)  # (R, C)
        hidden_near = (self.key_index[None, :near] > pos[:, None]).view(R, 1, 1, near)
        all_long = len(long) == R
        hidden_all = (self.key_index[None, :] > pos[long, None]).view(len(long), 1, 1, self.max_len)
        for i, block in enumerate(model.blocks):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).split(nh * hs, dim=1)  # (R, C) each
            for sel, keys, values, key_at, value_at in targets:
                ks, vs = (k, v) if sel is None else (k[sel], v[sel])
                keys.view(-1).scatter_(0, key_at[i], ks.reshape(-1))  # faster than index_copy_ here
                values.view(-1, hs).index_copy_(0, value_at[i], vs.reshape(-1, hs))
            q = q.reshape(R, nh, 1, hs)
            if all_long:  # the near page's result would be replaced for every row: skip it
                y = self._attend_all(q.contiguous(), self.keys_full[i], self.values_full[i], hidden_all)
            else:
                att = (q @ self.keys_near[i]) * self.scale  # (R, nh, 1, near)
                att = F.softmax(att.masked_fill(hidden_near, float("-inf")), dim=-1)
                y = att @ self.values_near[i]  # (R, nh, 1, hs)
                if len(long):
                    y[long] = self._attend_all(
                        q[long], self.keys_full[i, long], self.values_full[i, long], hidden_all
                    )
            x = x + attn.c_proj(y.view(R, nh * hs))
            x = x + block.mlp(block.ln_2(x))
        logits = model.lm_head(model.ln_f(x))[:, :N_SYMBOLS]
        return F.softmax(logits.float(), dim=-1).numpy()

    def _attend_all(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, hidden: torch.Tensor
    ) -> torch.Tensor:
        """Attention of rows past the near page over all ``max_len`` positions of the full page:
        ``q`` (n, nh, 1, hs) contiguous, ``keys`` (n, nh, hs, L) and ``values`` (n, nh, L, hs)
        contiguous, as the concatenated pages of earlier versions were (same shapes and layout, so
        the same numerics; the full page is read in place when every row is past the near page)."""
        att = (q @ keys) * self.scale
        att = F.softmax(att.masked_fill(hidden, float("-inf")), dim=-1)
        return att @ values


def reference_tables(m1: M1, windows: Sequence[bytes], max_len: int) -> list[np.ndarray]:
    """Tables from ``Transformer.forward`` on whole padded rows ``[BOS] + window`` of ``max_len``
    positions: ``tables[i][t]`` is the distribution of window i's byte t. The cross-check of
    :class:`M1Session` (equal to float32 rounding, see tests) and the padded reference shape."""
    rows = np.zeros((len(windows), max_len), dtype=np.int64)
    for i, w in enumerate(windows):
        if len(w) >= max_len:
            raise ConfigError(f"window {i} has {len(w)} bytes; at most {max_len - 1} fit a row of {max_len}")
        rows[i, 1 : 1 + len(w)] = np.frombuffer(w, dtype=np.uint8)
    rows[:, 0] = BOS
    with torch.no_grad():
        logits = m1.model(torch.from_numpy(rows))[..., :N_SYMBOLS]
        probs = F.softmax(logits.float(), dim=-1).numpy()
    return [quantize(probs[i, : len(w) + 1], m1.precision) for i, w in enumerate(windows)]


def session_tables(
    m1: M1,
    windows: Sequence[bytes],
    max_len: int,
    *,
    n_rows: int | None = None,
    rows_of: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Tables of every position of every window through :class:`M1Session` (the coding path).

    Window i runs in row ``rows_of[i]`` of a session of ``n_rows`` rows (default: one row each);
    the other rows stay idle. Used by the fingerprint and the determinism tests.
    """
    n_rows = n_rows or len(windows)
    rows_of = list(rows_of) if rows_of is not None else list(range(len(windows)))
    session = m1.session(n_rows, max_len)
    out: list[list[np.ndarray]] = [[] for _ in windows]
    try:
        _run_windows(session, windows, n_rows, rows_of, out)
    finally:
        session.close()
    return [np.stack(o) for o in out]


def _run_windows(
    session: M1Session,
    windows: Sequence[bytes],
    n_rows: int,
    rows_of: Sequence[int],
    out: list[list[np.ndarray]],
) -> None:
    longest = max((len(w) for w in windows), default=-1)
    for t in range(longest + 1):
        tokens = np.full(n_rows, IDLE, dtype=np.int64)
        for i, w in enumerate(windows):
            if t <= len(w):
                tokens[rows_of[i]] = START if t == 0 else w[t - 1]
        tables = session.step(tokens)
        for i, w in enumerate(windows):
            if t <= len(w):
                out[i].append(tables[rows_of[i]])


def _probe_windows(max_len: int) -> list[bytes]:
    return [text[i : i + max_len - 1] for text in _PROBE_TEXTS for i in range(0, len(text), max_len - 1)]


def fingerprint(m1: M1, max_len: int) -> str:
    """sha256 of M1's quantized tables on the fixed probe, through the coding path (computed once
    per M1 object and cache length). For an exact M1 it is the same on every machine."""
    if max_len not in m1._fingerprints:
        tag = f"v{FINGERPRINT_VERSION}" if not m1.exact else m1.numerics
        digest = hashlib.sha256(f"compresslm-m1-fingerprint-{tag}:{m1.precision}:{max_len}:".encode())
        for table in session_tables(m1, _probe_windows(max_len), max_len):
            digest.update(np.ascontiguousarray(table, dtype="<i8").tobytes())
        m1._fingerprints[max_len] = digest.hexdigest()
    return m1._fingerprints[max_len]


def check_row_independence(m1: M1, max_len: int, batch_size: int) -> None:
    """Raise IntegrityError if the probe's tables change when it runs among ``batch_size`` other
    rows: on such hardware the coder could not promise identical tables to the decoder."""
    if m1.exact or (max_len, batch_size) in m1._independent:  # exact: independent by construction
        return
    probe = _probe_windows(max_len)
    alone = session_tables(m1, probe, max_len)
    n_rows = max(batch_size, len(probe))
    rng = np.random.default_rng(0)
    rows_of = rng.permutation(n_rows)[: len(probe)]
    others = [
        bytes(rng.integers(32, 127, size=max_len - 1, dtype=np.uint8)) for _ in range(n_rows - len(probe))
    ]
    free = [r for r in range(n_rows) if r not in set(rows_of.tolist())]
    mixed = session_tables(m1, [*probe, *others], max_len, n_rows=n_rows, rows_of=[*rows_of.tolist(), *free])
    for a, b in zip(alone, mixed, strict=False):
        if not np.array_equal(a, b):
            raise IntegrityError(
                "M1's tables on this machine depend on the batch they run in; coding would not be "
                f"reproducible here (torch {torch.__version__}, {os.cpu_count()} CPUs)"
            )
    m1._independent.add((max_len, batch_size))


@dataclass(frozen=True)
class ModelCheck:
    """Identity of the model a container was written with: its weights' sha256 and numerics
    fingerprint, in full (version 2 .clm files) or as prefixes of at least 8 hex digits (version 3)."""

    sha256: str
    fingerprint: str


def verify_model(m1: M1, expected: ModelCheck, max_len: int, where: str) -> None:
    """IntegrityError naming ``where`` (a .clm path) if ``m1`` is not the model it was made with."""
    if len(expected.sha256) < 16 or not m1.sha256.startswith(expected.sha256):
        raise IntegrityError(
            f"{where}: written with M1 weights sha256 {expected.sha256[:16]}…, but the model given has "
            f"{m1.sha256[:16]}… (pass the right --model)"
        )
    got = fingerprint(m1, max_len)
    if len(expected.fingerprint) < 8 or not got.startswith(expected.fingerprint):
        raise IntegrityError(
            f"{where}: the M1 weights match but its numerics fingerprint differs on this machine "
            f"({got[:16]}… vs {expected.fingerprint[:16]}…): decoding here would not reproduce the bytes"
        )


class ExactM1(M1):
    """The integer-exact M1 (:mod:`compresslm.coding.exact`): the same interface as :class:`M1`
    (``session(n_rows, max_len).step(tokens) -> tables``, ``start_table``, lanes), with tables that
    are identical on every machine, thread count and batch. ``model`` is the
    :class:`~compresslm.coding.exact.ExactModel` (its ``config`` is the transformer's shape)."""

    exact = True

    def __init__(
        self,
        model: Any,
        *,
        precision: int = 14,
        threads: int | None = None,
        sha256: str | None = None,
        path: str | None = None,
        kernels: bool = True,
    ) -> None:
        from compresslm.coding.exact import NUMERICS, ExactNet

        self.numerics = NUMERICS
        self.model = model
        self.net = ExactNet(model)
        # The session's step through the fused numba kernels (CPU; the default), else torch ops
        self.kernels = kernels
        self.precision = precision
        self.threads = threads
        self.lanes = max(1, threads or torch.get_num_threads())
        self.sha256 = sha256 or model.sha256()
        self.path = path
        self.timings = StepTimings()
        self._fingerprints: dict[int, str] = {}
        self._independent: set[tuple[int, int]] = set()

    def session(self, n_rows: int, max_len: int) -> Any:
        from compresslm.coding.exact import ExactSession

        return ExactSession(self, n_rows, max_len)
