"""Quantization-aware training of the exact M1, and conversion to its integer form.

:class:`QATTransformer` is a :class:`Transformer` whose forward simulates the integer path in
float (docs/numerics.md): weights fake-quantized to int8 per output channel, every GEMM input
fake-quantized to int8 with a per-tensor scale, attention's output on the value scale, the MLP
activation between two quantizers (what the integer activation table computes). Rounding uses
straight-through gradients, so training sees the model that will be deployed. Activation scales
are observed (an exponential moving average of the absolute maximum while training, the running
maximum while calibrating) and :func:`to_exact` turns them and the weights into the integer model.

The residual stream is not simulated: it is 20-bit in the integer path, scaled from the observed
maximum with 4x headroom, so its rounding is far below everything else's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from compresslm.coding.exact import ExactModel, exp_table
from compresslm.coding.exact_ref import (
    ACT_MAX,
    EXP_ATTENTION_ONE,
    EXP_LOGITS_ONE,
    LN_GAIN_BITS,
    N_SYMBOLS,
    RESIDUAL_MAX,
)
from compresslm.models.transformer import Transformer, TransformerConfig

ATTENTION_STEP = 1 / 32  # nats per attention exp-table entry
LOGIT_STEP = 1 / 32  # nats per logit unit (and per logit exp-table entry)
RESIDUAL_HEADROOM = 4.0
MODES = ("ema", "max", "frozen")


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def fake_quant_rows(w: torch.Tensor) -> torch.Tensor:
    """int8 per output channel (row): ``round(w / s) * s`` with ``s = max|w_row| / 127``."""
    scale = (w.detach().abs().amax(dim=1, keepdim=True) / ACT_MAX).clamp_min(1e-12)
    return _ste_round(w / scale).clamp(-ACT_MAX, ACT_MAX) * scale


class Observer(nn.Module):
    """A per-tensor int8 quantizer with an observed absolute maximum (``amax``, a buffer)."""

    def __init__(self, momentum: float = 0.95) -> None:
        super().__init__()
        self.momentum = momentum
        self.mode = "ema"
        self.register_buffer("amax", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def observe(self, x: torch.Tensor) -> None:
        m = x.detach().abs().max().float()
        if self.mode == "max" or not bool(self.seen):
            self.amax.copy_(torch.maximum(self.amax, m) if bool(self.seen) else m)
        else:
            self.amax.mul_(self.momentum).add_((1 - self.momentum) * m)
        self.seen.fill_(True)

    @property
    def scale(self) -> float:
        return max(float(self.amax), 1e-8) / ACT_MAX

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale
        return _ste_round(x / s).clamp(-ACT_MAX, ACT_MAX) * s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "max" or (self.mode == "ema" and self.training):
            self.observe(x)
        return self.quantize(x)


class _LayerObservers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for name in ("ln_1", "q", "k", "v", "ln_2", "h", "a"):
            setattr(self, name, Observer())


class QATTransformer(Transformer):
    """:class:`Transformer` with the integer path simulated in its forward (see the module doc)."""

    def __init__(self, config: TransformerConfig, *, seed: int | None = None) -> None:
        super().__init__(config, seed=seed)
        self.observers = nn.ModuleList([_LayerObservers() for _ in range(config.n_layers)])
        self.ln_f_observer = Observer()
        self.residual = Observer()  # only its amax is used (the residual scale)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        for m in self.modules():
            if isinstance(m, Observer):
                m.mode = mode

    def _track(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual.mode == "max" or (self.residual.mode == "ema" and self.training):
            self.residual.observe(x)
        return x

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        cfg = self.config
        nh, hs = cfg.n_heads, cfg.head_dim
        pos = torch.arange(T, device=idx.device)
        x = self._track(fake_quant_rows(self.wte.weight)[idx] + fake_quant_rows(self.wpe.weight)[pos])
        for block, obs in zip(self.blocks, self.observers, strict=True):
            attn = block.attn
            a = obs.ln_1(block.ln_1(x))
            q, k, v = F.linear(a, fake_quant_rows(attn.c_attn.weight), attn.c_attn.bias).split(cfg.d_model, 2)
            q, k, v = (
                o(t).view(B, T, nh, hs).transpose(1, 2) for o, t in ((obs.q, q), (obs.k, k), (obs.v, v))
            )
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = obs.v.quantize(y.transpose(1, 2).reshape(B, T, cfg.d_model))  # on the value scale
            x = self._track(x + F.linear(y, fake_quant_rows(attn.c_proj.weight), attn.c_proj.bias))
            mlp = block.mlp
            h = obs.h(F.linear(obs.ln_2(block.ln_2(x)), fake_quant_rows(mlp.c_fc.weight), mlp.c_fc.bias))
            g = obs.a(mlp.act(h))
            x = self._track(x + F.linear(g, fake_quant_rows(mlp.c_proj.weight), mlp.c_proj.bias))
        a = self.ln_f_observer(self.ln_f(x))
        return F.linear(a, fake_quant_rows(self.lm_head.weight))


def from_float(model: Transformer) -> QATTransformer:
    """A QAT copy of a float model (same weights; observers unset until calibrated or trained)."""
    qat = QATTransformer(model.config)
    missing, unexpected = qat.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(
        not (k.startswith(("observers.", "ln_f_observer.", "residual.")) or k == "lm_head.weight")
        for k in missing
    ):
        raise ValueError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    return qat


@torch.no_grad()
def calibrate(qat: QATTransformer, batches: Iterable[torch.Tensor]) -> int:
    """Set every observer to the maximum seen over ``batches`` of input ids; returns the count."""
    qat.eval()
    for m in qat.modules():
        if isinstance(m, Observer):
            m.seen.fill_(False)
            m.amax.zero_()
    qat.set_mode("max")
    n = 0
    for x in batches:
        qat(x)
        n += 1
    qat.set_mode("ema")
    return n


# ------------------------------------------------------------------------------------- conversion


def mult_shift(r: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Integer (multiplier, shift) with ``m / 2**s ~ r`` and ``m`` in [2**14, 2**15) when the shift
    range 1..62 allows (15 significant bits)."""
    r = np.atleast_1d(np.asarray(r, dtype=np.float64))
    m = np.zeros(r.shape, dtype=np.int64)
    s = np.ones(r.shape, dtype=np.int64)
    for i, v in enumerate(r):
        if not v > 0:
            continue
        shift = int(min(62, max(1, 14 - math.floor(math.log2(v)))))
        mult = int(round(v * 2.0**shift))
        if mult >= 1 << 15 and shift > 1:
            shift -= 1
            mult = int(round(v * 2.0**shift))
        m[i], s[i] = min(mult, (1 << 31) - 1), shift
    return m.astype(np.int32), s.astype(np.int32)


def _rows(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    w = w.detach().double().cpu().numpy()
    scale = np.maximum(np.abs(w).max(axis=1) / ACT_MAX, 1e-12)
    q = np.clip(np.round(w / scale[:, None]), -ACT_MAX, ACT_MAX).astype(np.int8)
    return q, scale


def _act(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0.0)
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))  # torch's exact-erf GELU


def to_exact(qat: QATTransformer, extra: dict[str, Any] | None = None) -> ExactModel:
    """The integer model that :class:`QATTransformer`'s forward simulates."""
    cfg = qat.config
    if cfg.vocab_size != N_SYMBOLS:
        raise ValueError("an exact M1 is a byte model")
    t: dict[str, np.ndarray] = {}
    s_r = RESIDUAL_HEADROOM * max(float(qat.residual.amax), 1e-6) / RESIDUAL_MAX

    def i32(a: Any) -> np.ndarray:
        return np.clip(np.round(np.asarray(a, dtype=np.float64)), -(2**31) + 1, 2**31 - 1).astype(np.int32)

    for name, emb in (("tok_emb", qat.wte), ("pos_emb", qat.wpe)):
        q, scale = _rows(emb.weight)
        t[name] = q
        t[name + ".m"], t[name + ".s"] = mult_shift(scale / s_r)

    def norm(prefix: str, ln: nn.LayerNorm, s_out: float) -> None:
        g = ln.weight.detach().double().cpu().numpy()
        b = ln.bias.detach().double().cpu().numpy() if ln.bias is not None else np.zeros_like(g)
        t[prefix + ".g"] = i32(g * (1 << LN_GAIN_BITS) / s_out)
        t[prefix + ".b"] = i32(b / s_out)
        t[prefix + ".eps"] = np.maximum(i32([ln.eps / s_r**2]), 1)

    def linear(prefix: str, lin: nn.Linear, s_in: float, s_out: np.ndarray | float) -> None:
        q, scale = _rows(lin.weight)
        t[prefix + ".w"] = q
        acc_scale = s_in * scale
        bias = lin.bias.detach().double().cpu().numpy() if lin.bias is not None else np.zeros(len(q))
        t[prefix + ".bias"] = i32(bias / acc_scale)
        t[prefix + ".m"], t[prefix + ".s"] = mult_shift(acc_scale / np.broadcast_to(s_out, acc_scale.shape))

    C, hs = cfg.d_model, cfg.head_dim
    for i, (block, obs) in enumerate(zip(qat.blocks, qat.observers, strict=True)):
        p = f"blocks.{i}."
        norm(p + "ln_1", block.ln_1, obs.ln_1.scale)
        s_q, s_k, s_v = obs.q.scale, obs.k.scale, obs.v.scale
        linear(p + "attn", block.attn.c_attn, obs.ln_1.scale, np.repeat([s_q, s_k, s_v], C))
        m, s = mult_shift(s_q * s_k / (math.sqrt(hs) * ATTENTION_STEP))
        t[p + "attn.index"] = np.array([m[0], s[0]], dtype=np.int32)
        linear(p + "proj", block.attn.c_proj, s_v, s_r)
        norm(p + "ln_2", block.ln_2, obs.ln_2.scale)
        linear(p + "fc", block.mlp.c_fc, obs.ln_2.scale, obs.h.scale)
        levels = np.arange(-ACT_MAX, ACT_MAX + 1, dtype=np.float64) * obs.h.scale
        t[p + "act.lut"] = np.clip(
            np.round(_act(cfg.activation, levels) / obs.a.scale), -ACT_MAX, ACT_MAX
        ).astype(np.int32)
        linear(p + "out", block.mlp.c_proj, obs.a.scale, s_r)
    norm("ln_f", qat.ln_f, qat.ln_f_observer.scale)
    linear("head", qat.lm_head, qat.ln_f_observer.scale, LOGIT_STEP)
    t["exp_attention"] = exp_table(ATTENTION_STEP, EXP_ATTENTION_ONE)
    t["exp_logits"] = exp_table(LOGIT_STEP, EXP_LOGITS_ONE)
    return ExactModel(cfg, t, extra)
