"""The one small decoder-only transformer: M1 (byte model driving the coder), M2 (trained on
compressed tokens) and the base model of the selection study.

A pre-LayerNorm GPT in the style of nanoGPT's ``model.py``: learned absolute position embeddings,
causal self-attention, a 2-matrix MLP, weight tying between the token embedding and the output
layer. Read it top to bottom; tensor shapes are in the comments (B batch, T time, C = d_model,
nh heads, hs = C // nh head size, V vocabulary).

Determinism (docs/design.md#m1-numerics). M1's encoder and decoder must see bit-identical probabilities. For a
FIXED sequence length T, ``forward`` is bit-identical on CPU whatever the tokens after position t
(padding), the batch size and the thread count: every op is either row-wise (LayerNorm, MLP,
softmax), a GEMM whose reduction dimension does not depend on B or T, or attention whose masked
positions contribute exact zeros. Both attention paths (``"sdpa"``: ``scaled_dot_product_attention``
with ``is_causal=True``; ``"masked"``: matmul + mask + softmax) pass that test on this machine's
CPU build (tests/test_models_determinism.py); ``"sdpa"`` is the default because it is several times
faster. Changing T itself (a different padded length) or using the KV cache may change the last
bits: the cache path is only guaranteed equal to ``forward`` within 1e-5.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from compresslm.errors import ConfigError

ATTENTION_PATHS = ("sdpa", "masked")
ACTIVATIONS = ("gelu", "relu")


@dataclass
class TransformerConfig:
    """Shape of a :class:`Transformer`. Serialised as ``config.json`` next to the weights."""

    vocab_size: int
    d_model: int
    n_heads: int
    n_layers: int
    d_mlp: int
    max_seq_len: int
    dropout: float = 0.0
    tie_embeddings: bool = True
    bias: bool = True  # biases in Linear layers and LayerNorms
    activation: str = "gelu"  # "gelu" (nanoGPT) or "relu" (the Equal-Info paper's M1/M2)
    attention: str = "sdpa"  # "sdpa" or "masked"; both bit-identical across batch/threads on CPU
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "d_mlp", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"TransformerConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"TransformerConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        for name in ("tie_embeddings", "bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"TransformerConfig.{name} must be true or false, got {getattr(self, name)!r}"
                )
        for name in ("dropout", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"TransformerConfig.{name} must be a finite number, got {value!r}")
        if self.init_std <= 0:
            raise ConfigError(f"TransformerConfig.init_std must be positive, got {self.init_std!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"TransformerConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"TransformerConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if self.attention not in ATTENTION_PATHS:
            raise ConfigError(
                f"TransformerConfig.attention must be one of {ATTENTION_PATHS}, got {self.attention!r}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a config from a newer version)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TransformerConfig keys: {', '.join(unknown)}")
        required = {"vocab_size", "d_model", "n_heads", "n_layers", "d_mlp", "max_seq_len"}
        missing = sorted(required - set(data))
        if missing:
            raise ConfigError(f"missing TransformerConfig keys: {', '.join(missing)}")
        return cls(**data)

    def n_params(self, non_embedding: bool = True) -> int:
        """Parameter count from the shape alone (equals ``Transformer(config).n_params(...)``).

        Non-embedding excludes the token and position embeddings and an untied output layer,
        the convention of the Equal-Info paper's Table 4 (and Kaplan et al.).
        """
        d, m, b = self.d_model, self.d_mlp, int(self.bias)
        per_layer = (
            (2 * d if b else d)  # ln_1 (weight [+ bias])
            + 3 * d * d
            + b * 3 * d  # attention q, k, v
            + d * d
            + b * d  # attention output projection
            + (2 * d if b else d)  # ln_2
            + d * m
            + b * m  # MLP up
            + m * d
            + b * d  # MLP down
        )
        body = self.n_layers * per_layer + (2 * d if b else d)  # + final LayerNorm
        if non_embedding:
            return body
        embeddings = self.vocab_size * d + self.max_seq_len * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return body + embeddings + head


# Presets. Non-embedding parameter counts (bias=True, 2-matrix MLP; see TransformerConfig.n_params):
#   tiny   d64  h2  l2  mlp256      100,096   trains in seconds; for tests
#   small  d128 h4  l2  mlp512      396,800   CPU experiments, the selection study's default base
#   3m     d256 h4  l3  mlp1024   2,369,792   the paper's M1 (Table 4 "3m" row)
#   base   d384 h6  l6  mlp1536  10,647,552   a larger CPU/GPU base model
#   25m    d512 h8  l6  mlp2048  18,915,328   the paper's "25m" row (its 25.2M assumes a gated MLP)
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 64, "n_heads": 2, "n_layers": 2, "d_mlp": 256},
    "small": {"d_model": 128, "n_heads": 4, "n_layers": 2, "d_mlp": 512},
    "3m": {"d_model": 256, "n_heads": 4, "n_layers": 3, "d_mlp": 1024},
    "base": {"d_model": 384, "n_heads": 6, "n_layers": 6, "d_mlp": 1536},
    "25m": {"d_model": 512, "n_heads": 8, "n_layers": 6, "d_mlp": 2048},
}


def config_for_size(name: str, vocab_size: int, max_seq_len: int, **overrides: Any) -> TransformerConfig:
    """A :class:`TransformerConfig` for the preset ``name`` (see :data:`SIZES`)."""
    if name not in SIZES:
        raise ConfigError(f"unknown model size {name!r}; choose one of {', '.join(SIZES)}")
    return TransformerConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, **{**SIZES[name], **overrides})


@dataclass
class KVCache:
    """Keys and values of the positions seen so far, one ``(B, nh, T_past, hs)`` pair per layer."""

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)

    @property
    def length(self) -> int:
        return 0 if not self.keys else self.keys[0].shape[2]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.path = config.attention
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        T_past = 0
        if past is not None:
            T_past = past[0].shape[2]
            k = torch.cat([past[0], k], dim=2)  # (B, nh, T_past + T, hs)
            v = torch.cat([past[1], v], dim=2)
        y = self._attend(q, k, v, T_past)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y)), (k, v)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, T_past: int) -> torch.Tensor:
        """Query i (absolute position T_past + i) attends to keys 0 .. T_past + i."""
        T, S = q.shape[2], k.shape[2]
        dropout_p = self.dropout if self.training else 0.0
        if self.path == "sdpa":
            if T_past == 0:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            # is_causal aligns the mask top-left, which is wrong once there is a past: pass it explicitly.
            mask = None if T == 1 else _causal_mask(T, S, T_past, q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        # "masked": the textbook path, (B, nh, T, hs) x (B, nh, hs, S) -> (B, nh, T, S)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
        att = att.masked_fill(~_causal_mask(T, S, T_past, q.device), float("-inf"))
        att = F.dropout(F.softmax(att, dim=-1), p=dropout_p, training=self.training)
        return att @ v  # (B, nh, T, S) x (B, nh, S, hs) -> (B, nh, T, hs)


def _causal_mask(T: int, S: int, T_past: int, device: torch.device) -> torch.Tensor:
    """(T, S) boolean, True where query i may attend to key j, i.e. j <= T_past + i."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=T_past)


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, config.d_mlp, bias=config.bias)
        self.act = nn.GELU() if config.activation == "gelu" else nn.ReLU()  # exact erf GELU: deterministic
        self.c_proj = nn.Linear(config.d_mlp, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, kv = self.attn(self.ln_1(x), past)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


class Transformer(nn.Module):
    """Decoder-only transformer. ``forward(idx[B, T]) -> logits[B, T, V]``.

    ``seed`` makes initialisation independent of the global torch RNG (same seed, same weights).
    """

    def __init__(self, config: TransformerConfig, *, seed: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)  # token embeddings
        self.wpe = nn.Embedding(config.max_seq_len, config.d_model)  # learned absolute positions
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # Weight tying (Press & Wolf 2017): fewer parameters, and for a 256-symbol byte model the
            # output layer is as large as the whole input embedding, so sharing it helps small models.
            self.lm_head.weight = self.wte.weight
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int | None = None) -> None:
        """GPT-2 initialisation: N(0, 0.02); residual projections scaled by 1/sqrt(2 * n_layers)
        so the residual stream's variance does not grow with depth."""
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        std = self.config.init_std
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                scale = 1 / math.sqrt(2 * self.config.n_layers) if name.endswith("c_proj.weight") else 1.0
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=gen) * (std * scale))
            elif ".ln_" in f".{name}" and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def n_params(self, non_embedding: bool = True) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        params = {id(p): p for p in self.parameters()}
        n = sum(p.numel() for p in params.values())
        if non_embedding:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits, _ = self._run(idx, None)
        return logits

    def forward_with_cache(
        self, idx: torch.Tensor, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """Incremental decoding: ``idx`` (B, T_new) continues the positions held in ``cache``.

        Returns the logits of the new positions (B, T_new, V) and the extended cache (a new
        object; the one passed in is not modified). Equal to ``forward`` on the whole sequence
        within 1e-5, not bit-identical (the matmul shapes differ).
        """
        return self._run(idx, cache if cache is not None else KVCache())

    def _run(self, idx: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        B, T = idx.shape
        T_past = cache.length if cache is not None else 0
        if T_past + T > self.config.max_seq_len:
            raise ConfigError(
                f"sequence of {T_past + T} positions exceeds the model's max_seq_len {self.config.max_seq_len}"
            )
        pos = torch.arange(T_past, T_past + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        new_cache = KVCache()
        for i, block in enumerate(self.blocks):
            past = (cache.keys[i], cache.values[i]) if cache is not None and T_past else None
            x, (k, v) = block(x, past)
            if cache is not None:
                new_cache.keys.append(k)
                new_cache.values.append(v)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits, new_cache

    @torch.no_grad()
    def sample(
        self,
        idx: torch.Tensor,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        banned: Sequence[int] = (),
    ) -> Iterator[torch.Tensor]:
        """Sample continuations of ``idx`` (B, T) for as long as the caller reads: yields each next
        id, (B, 1). ``temperature == 0`` is greedy; ``top_k`` keeps the k likeliest ids; ``banned``
        ids are never drawn (e.g. padding). The one sampling loop of the project.

        The KV cache serves while the context fits in ``max_seq_len``. Beyond it the context is the
        last ``max_seq_len`` ids, recomputed every step: positions are absolute, so a cache cannot
        slide.
        """
        if temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {temperature}")
        max_len = self.config.max_seq_len
        context = idx[:, -max_len:]
        logits, cache = self.forward_with_cache(context)
        while True:
            last = logits[:, -1, :].float()  # (B, V)
            if generator is not None:
                last = last.to(generator.device)
            if banned:
                last[:, list(banned)] = float("-inf")
            if temperature == 0:
                nxt = last.argmax(dim=-1, keepdim=True)
            else:
                last = last / temperature
                if top_k is not None:
                    kth = torch.topk(last, min(top_k, last.shape[-1])).values[:, -1:]
                    last = last.masked_fill(last < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(last, dim=-1), 1, generator=generator)  # (B, 1)
            yield nxt
            nxt = nxt.to(idx.device)
            context = torch.cat([context, nxt], dim=1)
            if context.shape[1] <= max_len:
                logits, cache = self.forward_with_cache(nxt, cache)
            else:
                context = context[:, -max_len:]
                logits, cache = self.forward_with_cache(context)

    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``idx`` (B, T) followed by ``max_new_tokens`` sampled ids (see :meth:`sample`)."""
        steps = itertools.islice(
            self.sample(idx, temperature=temperature, top_k=top_k, generator=generator), max_new_tokens
        )
        return torch.cat([idx, *(s.to(idx.device) for s in steps)], dim=1)


def loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean negative log-likelihood in nats over the targets that are not ``ignore_index``.

    Computed in float32 whatever the logits' dtype (bfloat16 cross-entropy loses ~2 digits).
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=ignore_index
    )
