"""Training throughput of M1 on the CPU: tokens/s of one training step per setting, side by side.

    python benchmarks/train_speed.py --size 3m --context 512 --steps 3 --repeats 2

Each setting builds the same model (same seed) and runs the step :func:`compresslm.models.train_lm`
runs (forward, loss, backward, gradient clipping, AdamW) on the same random batches of bytes:
``--warmup`` untimed steps (torch.compile compiles there), then ``--steps`` timed ones. Settings
vary torch's threads, the batch size, ``torch.compile`` and bfloat16 autocast (``m1 train
--bf16``). Two clocks: wall time, and this process's CPU time. On the shared development machine
a niced run gets a fraction of a core, so wall time mostly measures the other processes; CPU time
per token is what a setting costs, and the ratio column compares that (for 2 threads it sums both,
so it shows the cost, and wall time the gain if the cores were free). The loss of the timed steps
is printed too: settings that change the arithmetic must not change what is learned. That is
checked for bfloat16 by ``--compare SIZE:STEPS --corpus DIR`` (a machine corpus folder): the same
model trained the same steps on the same batches of ``train.u8``, float32 and bf16, then both
evaluated in float32 on the first 30,000 bytes of ``heldout.u8``. Settings
run interleaved ``--repeats`` times and the best of each clock is kept, since other work only
ever slows a step down.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compresslm.models import Transformer, config_for_size
from compresslm.models.train import configure_optimizer, torch_threads
from compresslm.models.transformer import loss as lm_loss

#: (name, threads, batch size, compile, bf16 autocast)
SETTINGS: list[tuple[str, int, int, bool, bool]] = [
    ("baseline: 1 thread, batch 8", 1, 8, False, False),
    ("2 threads, batch 8", 2, 8, False, False),
    ("1 thread, batch 4", 1, 4, False, False),
    ("1 thread, batch 16", 1, 16, False, False),
    ("1 thread, batch 8, torch.compile", 1, 8, True, False),
    ("1 thread, batch 8, bf16 autocast", 1, 8, False, True),
    ("1 thread, batch 8, compile + bf16", 1, 8, True, True),
]


def measure(
    size: str, context: int, threads: int, batch: int, compiled: bool, bf16: bool, warmup: int, steps: int
) -> tuple[float, float, float]:
    """Wall seconds and CPU seconds (this process, all its threads) per timed step, and the timed
    steps' mean loss (nats/byte), for one setting."""
    config = config_for_size(size, vocab_size=256, max_seq_len=context, activation="relu")
    model = Transformer(config, seed=0)
    model.train()
    optimizer = configure_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    forward: Any = torch.compile(model) if compiled else model
    rng = np.random.default_rng(0)
    cast = torch.autocast(device_type="cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    losses, seconds, cpu = [], 0.0, 0.0
    with torch_threads(threads):
        for i in range(warmup + steps):
            x = torch.from_numpy(rng.integers(0, 256, size=(batch, context + 1)))
            t, c = time.perf_counter(), time.process_time()
            with cast:
                logits = forward(x[:, :-1])
            loss = lm_loss(logits.float(), x[:, 1:], -100)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            if i >= warmup:
                seconds += time.perf_counter() - t
                cpu += time.process_time() - c
                losses.append(float(loss.detach()))
    return seconds / steps, cpu / steps, float(np.mean(losses))


def compare_bf16(size: str, steps: int, corpus: Path) -> dict[str, dict[str, float]]:
    """Held-out bits/byte (float32 evaluation) of ``size`` trained ``steps`` steps in float32 and in
    bf16 autocast, same seed and batches (batch 8, context 512, lr 2e-3, as the shipped M1's run)."""
    from compresslm.coding.m1_train import ResetStream
    from compresslm.models import TrainConfig, train_lm
    from compresslm.models.train import evaluate_lm

    train = ResetStream(np.memmap(corpus / "train.u8", dtype=np.uint8, mode="r"), name="train")
    held = ResetStream(np.memmap(corpus / "heldout.u8", dtype=np.uint8, mode="r"), name="heldout")
    out = {}
    for amp in (False, True):
        model = Transformer(config_for_size(size, vocab_size=256, max_seq_len=512, activation="relu"), seed=0)
        config = TrainConfig(max_tokens=steps * 8 * 512, batch_size=8, seq_len=512, lr=2e-3, seed=0,
                             threads=1, device="cpu", eval_at_start=False, amp=amp)  # fmt: skip
        c = time.process_time()
        result = train_lm(model, train, config, progress=False)
        cpu = time.process_time() - c
        with torch.no_grad():
            nats = evaluate_lm(model, held, 30_000, seq_len=512, batch_size=8, amp=False)
        out["bf16" if amp else "float32"] = {
            "heldout_bits_per_byte": nats / math.log(2),
            "train_cpu_s": cpu,
            "train_wall_s": result.train_s,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="3m")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per setting (default 2)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per setting (default 4)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds, best kept (default 2)")
    p.add_argument("--only", help="comma-separated setting numbers (1-based) to run; 1 is the baseline")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--compare", metavar="SIZE:STEPS", help="train float32 vs bf16, e.g. small:150")
    p.add_argument("--corpus", type=Path, help="machine corpus folder for --compare")
    args = p.parse_args(argv)
    if args.compare:
        if args.corpus is None:
            p.error("--compare needs --corpus")
        size, steps = args.compare.split(":")
        result = compare_bf16(size, int(steps), args.corpus)
        print(f"M1 {size}, {steps} steps of 8 x 512 bytes: held-out bits/byte (float32 evaluation)")
        for name, r in result.items():
            print(f"{name:<8} {r['heldout_bits_per_byte']:.4f}   train CPU {r['train_cpu_s']:.0f} s")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=1)
        return 0
    chosen = [SETTINGS[int(i) - 1] for i in args.only.split(",")] if args.only else SETTINGS
    best: dict[str, tuple[float, float, float]] = {}
    for _ in range(args.repeats):
        for name, threads, batch, compiled, bf16 in chosen:
            wall, cpu, loss = measure(
                args.size, args.context, threads, batch, compiled, bf16, args.warmup, args.steps
            )
            old = best.get(name)
            best[name] = (min(wall, old[0]), min(cpu, old[1]), loss) if old else (wall, cpu, loss)
            print(f"  {name}: {wall:.2f} s/step wall, {cpu:.2f} s/step CPU", file=sys.stderr, flush=True)
    base = best.get(SETTINGS[0][0])
    print(f"M1 {args.size}, context {args.context}: best of {args.repeats} x {args.steps} timed steps")
    print(
        f"{'setting':<36} {'wall s':>7} {'tok/s':>6} {'CPU s':>7} {'tok/CPU-s':>9} {'vs base':>8} {'loss':>7}"
    )
    rows = []
    for name, _threads, batch, _c, _b in chosen:
        wall, cpu, loss = best[name]
        tokens = batch * args.context
        # per CPU-second: what a setting costs on a shared machine, where wall time is mostly others'
        ratio = (tokens / cpu) / (SETTINGS[0][2] * args.context / base[1]) if base else float("nan")
        rows.append({"setting": name, "wall_s_per_step": wall, "tokens_per_s": tokens / wall,
                     "cpu_s_per_step": cpu, "tokens_per_cpu_s": tokens / cpu, "vs_base": ratio, "loss": loss})  # fmt: skip
        print(
            f"{name:<36} {wall:>7.2f} {tokens / wall:>6.0f} {cpu:>7.2f} {tokens / cpu:>9.0f} "
            f"{ratio:>7.2f}x {loss:>7.4f}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"size": args.size, "context": args.context, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
