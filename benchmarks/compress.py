"""Neural compression benchmark: round trips, compression against gzip/zstd/xz, and speed against
this machine's float32 matmul FLOP/s, all measured in one run (the machine is shared and noisy:
timings are medians of ``--repeats`` runs, and the matmul reference is measured beside them).

    python benchmarks/compress.py            # 3m M1 (trained once into bench-out/ if missing)
    python benchmarks/compress.py --quick    # smaller sample, tiny model: a minute
    python benchmarks/compress.py --stdlib all --roundtrip-model bench-out/m1-tiny \
        --roundtrip-batch-size 1024  # every stdlib file (31 MB) with the tiny M1

Prints a table; ``--json`` also writes every number.

What is measured:

* **Round trip** (``--code straddle`` and ``--code zeros``) on built-in corpus documents and on
  Python standard-library files: byte-identical restores, windows that decode from the tokens
  alone, exceptions, back-offs and their cost in bytes per window.
* **Compression**: M1's cross-entropy inside the windows (bits/byte), EqualInfoAC[b] bytes per
  window and bits/byte including padding, gzip -9, zstd -19 and xz -9e on the same documents.
* **Speed**: encode and decode bytes/s (median of repeats on a fixed sample), the encoder's useful
  FLOP/s (2 N_params per encoded byte) as a fraction of the measured matmul FLOP/s, and where the
  encoder's time goes (M1 forward, quantization, the Python coder).
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import torch
import zstandard

from compresslm.coding.compress import DEFAULT_SEGMENT_BYTES, segment
from compresslm.coding.equal_info import EqualInfoCoder
from compresslm.coding.m1 import M1, StepTimings
from compresslm.coding.window_coder import DEFAULT_BATCH_ROWS, exception_table


def matmul_flops(threads: int | None, size: int = 1024, repeats: int = 7) -> float:
    """Median float32 GEMM FLOP/s of an n x n x n product (all torch threads unless given)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    torch.set_num_threads(before)
    return 2 * size**3 / statistics.median(times)


def matmul_reference(threads: int | None, lanes: int) -> dict[str, float]:
    """The machine's matmul FLOP/s two ways: one GEMM on all threads, and ``lanes`` times a
    single-threaded GEMM (how the coder computes). The bound uses the larger: on a loaded machine a
    multi-threaded GEMM waits for descheduled threads, and the smaller reference would flatter us."""
    all_threads = matmul_flops(threads)
    per_core = matmul_flops(1)
    return {
        "all_threads": all_threads,
        "lanes_x_one_thread": lanes * per_core,
        "reference": max(all_threads, lanes * per_core),
    }


def timed_stream_round_trip(coder: Any, units: list[bytes]) -> tuple[dict[str, float], bool]:
    """Encode then decode ``units`` with a stream coder: wall and CPU seconds of each direction
    (``enc``, ``enc_cpu``, ``dec``, ``dec_cpu``) and whether the bytes came back unchanged."""
    t, cpu = time.perf_counter(), time.process_time()
    codes = coder.encode_many(units)
    times = {"enc": time.perf_counter() - t, "enc_cpu": time.process_time() - cpu}
    t, cpu = time.perf_counter(), time.process_time()
    back = coder.decode_many(codes, [len(u) for u in units])
    times.update(dec=time.perf_counter() - t, dec_cpu=time.process_time() - cpu)
    return times, back == units


def builtin_docs(n: int) -> list[bytes]:
    from compresslm.data.builtin import generic_mixture

    return [r.data for r in generic_mixture(n, seed=1)]


def mixture_sample(min_docs: int, limit_bytes: int) -> list[bytes]:
    """The first built-in mixture documents until ``limit_bytes`` (the mixture is prefix-stable)."""
    sample, total = [], 0
    for d in builtin_docs(max(min_docs, limit_bytes // 500)):
        if total >= limit_bytes:
            break
        sample.append(d)
        total += len(d)
    return sample


def stdlib_files(mode: str, limit_bytes: int) -> list[tuple[str, bytes]]:
    """Every ``.py`` file of the stdlib (``all``), or an evenly spread sample up to ``limit_bytes``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.is_file())
    if mode == "all":
        return [(str(p.relative_to(root)), p.read_bytes()) for p in files]
    out, total = [], 0
    step = max(1, len(files) // 400)
    for p in files[::step]:
        data = p.read_bytes()
        if total + len(data) > limit_bytes:
            continue
        out.append((str(p.relative_to(root)), data))
        total += len(data)
    return out


def ensure_model(path: Path, size: str, tokens: int, threads: int | None) -> Path:
    if (path / "config.json").is_file():
        return path
    from compresslm.coding.m1_train import train_m1

    print(f"training M1 {size} into {path} ({tokens:,} tokens; once, then cached)", file=sys.stderr)
    texts = [d.decode("utf-8") for d in builtin_docs(10_000)]
    train_m1(texts, size=size, context=128, max_tokens=tokens, lr=2e-3, threads=threads, out=path)
    return path


def split(docs: list[bytes], segment_bytes: int) -> tuple[list[bytes], list[int]]:
    """Documents cut into the independent segments the .clm format codes (and their owners)."""
    units, owner = [], []
    for i, d in enumerate(docs):
        segs = segment(d, segment_bytes)
        units += segs
        owner += [i] * len(segs)
    return units, owner


def round_trip(coder: EqualInfoCoder, docs: list[bytes], segment_bytes: int) -> dict[str, Any]:
    """Encode and decode every document (in segments, like ``compress``); count what decodes from
    the tokens alone."""
    coder.stats = type(coder.stats)()
    units, owner = split(docs, segment_bytes)
    t = time.perf_counter()
    coded = coder.encode_many(units)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    pieces = coder.decode_many(coded, lengths=[len(u) for u in units])
    dec = time.perf_counter() - t
    restored = [b""] * len(docs)
    exc_docs = set()
    for i, piece, wins in zip(owner, pieces, coded, strict=True):
        restored[i] += piece
        if exception_table(wins):
            exc_docs.add(i)
    windows = sum(len(w) for w in coded)
    n_bytes = sum(len(d) for d in docs)
    identical = sum(a == b for a, b in zip(restored, docs, strict=True))
    s = coder.stats
    return {
        "documents": len(docs),
        "identical": identical,
        "bytes": n_bytes,
        "windows": windows,
        "exceptions": s.exceptions,
        "token_only_windows": windows - s.exceptions,
        "token_only_docs": len(docs) - len(exc_docs),
        "backed_off": s.backed_off,
        "bytes_per_window": n_bytes / max(1, windows),
        "bits_per_byte": windows * coder.params.window_bits / max(1, n_bytes),
        "m1_bits_per_byte": s.ideal_bits / max(1, n_bytes),
        "positions_per_byte": s.positions / max(1, n_bytes),
        "encode_s": enc,
        "decode_s": dec,
    }


def baselines(docs: list[bytes]) -> dict[str, float]:
    """bits/byte of gzip -9, zstd -19 and xz -9e, per document (like the coder) and on the concatenation."""
    n = sum(len(d) for d in docs)
    zc = zstandard.ZstdCompressor(level=19)
    per_doc = {
        "gzip -9": sum(len(gzip.compress(d, 9, mtime=0)) for d in docs),
        "zstd -19": sum(len(zc.compress(d)) for d in docs),
        "xz -9e": sum(len(lzma.compress(d, preset=9 | lzma.PRESET_EXTREME)) for d in docs),
    }
    joined = b"".join(docs)
    whole = {
        "gzip -9": len(gzip.compress(joined, 9, mtime=0)),
        "zstd -19": len(zc.compress(joined)),
        "xz -9e": len(lzma.compress(joined, preset=9 | lzma.PRESET_EXTREME)),
    }
    out = {f"{k} (per document)": 8 * v / n for k, v in per_doc.items()}
    out.update({f"{k} (concatenated)": 8 * v / n for k, v in whole.items()})
    return out


def steady_positions_per_s(trace: list[tuple[int, int, float]], start: float) -> float:
    """Computed positions per second from ``start`` until the first step that had an idle row (in
    any lane): the speed of a corpus large enough to keep every row busy."""
    ends = sorted(trace, key=lambda x: x[2])
    t_idle = next((t for busy, rows, t in ends if busy < rows), ends[-1][2] if ends else start)
    positions = sum(busy for busy, _, t in ends if t <= t_idle)
    return positions / (t_idle - start) if t_idle > start else 0.0


def speed(
    m1: M1,
    docs: list[bytes],
    window_bits: int,
    batch_size: int,
    repeats: int,
    segment_bytes: int,
    threads: int | None,
) -> dict[str, Any]:
    """Median encode/decode bytes/s over repeats on ``docs``, with the encoder's time split; the
    matmul reference is measured again after every repeat (the load on a shared machine drifts)."""
    coder = EqualInfoCoder(m1, window_bits, batch_size=batch_size)
    docs, _ = split(docs, segment_bytes)
    n = sum(len(d) for d in docs)
    enc, dec, splits, steady, flops, enc_cpu, dec_cpu = [], [], [], [], [], [], []
    for _ in range(repeats):
        m1.timings = StepTimings()
        trace: list[tuple[int, int, float]] = []
        coder.stats = type(coder.stats)()
        t, c = time.perf_counter(), time.process_time()
        coded = coder.encode_many(docs, trace=trace)
        enc.append(time.perf_counter() - t)
        enc_cpu.append(time.process_time() - c)
        # Steady state: until a row first goes idle (a large corpus is almost all of it); computed
        # positions per byte converts the rows' positions into coded bytes.
        per_byte = sum(busy for busy, _, _ in trace) / n
        steady.append(steady_positions_per_s(trace, t) / per_byte)
        splits.append(
            (
                m1.timings.forward_s,
                m1.timings.quantize_s,
                m1.timings.steps,
                m1.timings.row_positions,
                per_byte,
            )
        )
        t, c = time.perf_counter(), time.process_time()
        assert coder.decode_many(coded) == docs
        dec.append(time.perf_counter() - t)
        dec_cpu.append(time.process_time() - c)
        flops.append(matmul_reference(threads, m1.lanes))
    i = enc.index(statistics.median_low(enc))
    forward, quant, steps, rows, busy_per_byte = splits[i]
    lane_seconds = m1.lanes * enc[i]  # the lanes overlap: shares are of all lanes' time together
    return {
        "bytes": n,
        "segments": len(docs),
        "lanes": m1.lanes,
        "encode_bytes_per_s": n / statistics.median(enc),
        "encode_steady_bytes_per_s": statistics.median(steady),
        "decode_bytes_per_s": n / statistics.median(dec),
        # Per CPU second of this process (all lanes together): what the other processes on a
        # shared machine change least, so the fairer ratio of two paths measured in turns.
        "encode_bytes_per_cpu_s": n / statistics.median(enc_cpu),
        "decode_bytes_per_cpu_s": n / statistics.median(dec_cpu),
        "encode_s_runs": enc,
        "decode_s_runs": dec,
        "encode_forward_share": forward / lane_seconds,
        "encode_quantize_share": quant / lane_seconds,
        "encode_coder_share": 1 - (forward + quant) / lane_seconds,
        "encode_steps": steps,
        "encode_row_positions_per_byte": rows / n,
        "encode_busy_positions_per_byte": busy_per_byte,
        "positions_per_s_in_forward": rows / forward if forward else 0.0,
        "matmul_flops_runs": flops,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sample and the tiny model (about a minute)")
    p.add_argument(
        "--model", help="M1 folder (default bench-out/m1-3m, trained if missing; tiny with --quick)"
    )
    p.add_argument(
        "--train-tokens", type=int, default=1_500_000, help="tokens when the model must be trained"
    )
    p.add_argument("--docs", type=int, default=300, help="built-in mixture documents for the round trip")
    p.add_argument(
        "--stdlib", choices=["sample", "all"], default="sample", help="stdlib .py files: sample or all"
    )
    p.add_argument("--stdlib-bytes", type=int, default=400_000, help="size of the stdlib sample")
    p.add_argument(
        "--roundtrip-model",
        help="M1 for the stdlib round trip (default --model); a small one makes --stdlib all affordable",
    )
    p.add_argument(
        "--speed-bytes",
        type=int,
        default=1_200_000,
        help="bytes of the speed sample (mixture "
        "documents; enough segments to keep every row busy for most of the run)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--window-bits", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_ROWS)
    p.add_argument(
        "--roundtrip-batch-size", type=int, help="rows for the stdlib round trip (default --batch-size)"
    )
    p.add_argument(
        "--segment-bytes", type=int, default=DEFAULT_SEGMENT_BYTES, help="independent coding units"
    )
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--speed-only", action="store_true", help="skip the round trips and baselines")
    p.add_argument("--json", help="write all numbers here")
    n = p.add_argument_group("Neural compression (--neural): stream mode against gzip, xz, zstd, brotli")
    n.add_argument("--neural", action="store_true", help="run only the stream-mode comparison")
    n.add_argument(
        "--neural-models",
        nargs="+",
        default=["bench-out/m1-tiny-exact", "bench-out/m1-3m-exact"],
        help="M1 folders to compare (each: compression of the files, encode/decode speed)",
    )
    n.add_argument(
        "--files",
        nargs="+",
        help="held-out real files (default: an evenly spread sample of the stdlib's .py files, "
        "--neural-bytes in all; not in the benchmark models' training mixture)",
    )
    n.add_argument("--neural-bytes", type=int, default=200_000, help="size of the default file sample")
    n.add_argument(
        "--context-study",
        help="float M1 folder: cross-entropy with restarts vs sliding windows (the choice of stream mode)",
    )
    x = p.add_argument_group("Exact M1 (--exact): exact vs float M1, same bytes and tokens")
    x.add_argument("--exact", action="store_true", help="run only the cost-of-exactness comparison")
    x.add_argument(
        "--exact-speed-models",
        nargs=2,
        metavar=("FLOAT", "EXACT"),
        help="with --exact: only the windows-mode speed of these two M1s (no training, no bits/byte)",
    )
    x.add_argument(
        "--exact-sizes", default="tiny=1M,3m=300k", help="SIZE=TOKENS,... (default tiny=1M,3m=300k)"
    )
    x.add_argument("--exact-docs", type=int, default=10_000, help="mixture documents to train on")
    x.add_argument("--exact-speed-bytes", type=int, default=200_000, help="bytes of the speed sample")
    x.add_argument("--exact-out", default="bench-out/exact", help="where the models are kept")
    x.add_argument(
        "--exact-eval-bytes", type=int, default=100_000, help="held-out bytes scored per model (default 100k)"
    )
    w = p.add_argument_group("Windows coder (--windows-coder): the vectorized coder against the scalar one")
    w.add_argument("--windows-coder", action="store_true", help="run only the windows-coder comparison")
    w.add_argument(
        "--windows-model", default="bench-out/m1-tiny", help="M1 for the end-to-end windows-mode runs"
    )
    w.add_argument(
        "--windows-bytes",
        type=int,
        default=262_144,
        help="stdlib bytes compressed end to end (default 256 KiB)",
    )
    v = p.add_argument_group("Stream speed (--stream-speed): the exact M1's step, fused kernels vs torch ops")
    v.add_argument(
        "--stream-speed",
        nargs="+",
        metavar="EXACT",
        help="exact M1 folders: stream-mode encode/decode bytes/s and per CPU second (--threads lanes, "
        "--batch-size rows), the step through the fused kernels and through torch ops in turns",
    )
    v.add_argument("--stream-bytes", type=int, default=1 << 20, help="stdlib bytes coded (default 1 MiB)")
    v.add_argument("--kernels-only", action="store_true", help="skip the torch-ops step (slow)")
    args = p.parse_args(argv)
    if args.stream_speed:
        if args.threads:
            torch.set_num_threads(args.threads)
        return stream_speed(args)
    if args.windows_coder:
        if args.threads:
            torch.set_num_threads(args.threads)
        return windows_coder(args)
    if args.neural or args.context_study:
        if args.threads:
            torch.set_num_threads(args.threads)
        return neural(args)
    if args.exact:
        if args.threads:
            torch.set_num_threads(args.threads)
        return exact_speed_only(args) if args.exact_speed_models else exactness(args)
    if args.quick:
        args.docs, args.stdlib_bytes, args.speed_bytes, args.repeats = 60, 60_000, 20_000, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    size = "tiny" if args.quick else "3m"
    model_dir = Path(args.model or f"bench-out/m1-{size}")
    ensure_model(model_dir, size, 200_000 if args.quick else args.train_tokens, args.threads)
    m1 = M1.load(model_dir)
    results: dict[str, Any] = {
        "model": str(model_dir),
        "n_params": m1.n_params,
        "threads": torch.get_num_threads(),
        "window_bits": args.window_bits,
    }

    flops_before = matmul_reference(args.threads, m1.lanes)
    mixture = builtin_docs(args.docs)
    stdlib = stdlib_files(args.stdlib, args.stdlib_bytes)
    rt_m1 = M1.load(args.roundtrip_model) if args.roundtrip_model else m1
    results["roundtrip_model"] = args.roundtrip_model or str(model_dir)
    results["segment_bytes"] = args.segment_bytes
    for code in () if args.speed_only else ("straddle", "zeros"):
        coder = EqualInfoCoder(m1, args.window_bits, code=code, batch_size=args.batch_size)
        results[f"mixture/{code}"] = round_trip(coder, mixture, args.segment_bytes)
        rt = EqualInfoCoder(
            rt_m1, args.window_bits, code=code, batch_size=args.roundtrip_batch_size or args.batch_size
        )
        results[f"stdlib/{code}"] = round_trip(rt, [d for _, d in stdlib], args.segment_bytes)
    if not args.speed_only:
        results["baselines/mixture"] = baselines(mixture)
        results["baselines/stdlib"] = baselines([d for _, d in stdlib])

    # More mixture documents than the round trip uses, in the same order (the mixture is prefix-stable).
    sample = mixture_sample(args.docs, args.speed_bytes)
    results["speed"] = speed(
        m1, sample, args.window_bits, args.batch_size, args.repeats, args.segment_bytes, args.threads
    )
    flops_after = matmul_reference(args.threads, m1.lanes)
    flops_runs = [flops_before, *results["speed"].pop("matmul_flops_runs"), flops_after]
    flops = statistics.median(f["reference"] for f in flops_runs)
    sp = results["speed"]
    bound = flops / (2 * m1.n_params)
    results["matmul_flops"] = {
        "runs": flops_runs,
        "median": flops,
        "median_all_threads": statistics.median(f["all_threads"] for f in flops_runs),
        "median_lanes_x_one_thread": statistics.median(f["lanes_x_one_thread"] for f in flops_runs),
    }
    results["bound_bytes_per_s"] = bound
    results["encoder_fraction_of_bound"] = sp["encode_bytes_per_s"] / bound
    results["encoder_steady_fraction_of_bound"] = sp["encode_steady_bytes_per_s"] / bound
    results["decoder_fraction_of_bound"] = sp["decode_bytes_per_s"] / bound
    if not args.speed_only:
        print_table(results)
    print_speed(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    ok = all(
        r["identical"] == r["documents"] for k, r in results.items() if k.endswith(("/straddle", "/zeros"))
    )
    return 0 if ok else 1


def print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    b = r["window_bits"]
    t = Table(
        title=f"EqualInfoAC[b={b}] with M1 {r['model']} ({r['n_params']:,} non-embedding params, "
        f"{r['threads']} threads; stdlib columns: M1 {r['roundtrip_model']}; segments of "
        f"{r['segment_bytes']:,} bytes)"
    )
    t.add_column("")
    for col in ("mixture: straddle", "mixture: zeros (paper)", "stdlib: straddle", "stdlib: zeros (paper)"):
        t.add_column(col, justify="right")
    keys = [f"{c}/{k}" for c in ("mixture", "stdlib") for k in ("straddle", "zeros")]
    rows = [
        ("documents (bytes)", lambda x: f"{x['documents']:,} ({x['bytes']:,})"),
        ("byte-identical round trips", lambda x: f"{x['identical']}/{x['documents']}"),
        (
            "windows from tokens alone",
            lambda x: f"{100 * x['token_only_windows'] / max(1, x['windows']):.3f}%",
        ),
        (
            "documents from tokens alone",
            lambda x: f"{100 * x['token_only_docs'] / max(1, x['documents']):.2f}%",
        ),
        ("exceptions", lambda x: f"{x['exceptions']:,} / {x['windows']:,}"),
        ("backed-off windows", lambda x: f"{100 * x['backed_off'] / max(1, x['windows']):.2f}%"),
        ("bytes per window", lambda x: f"{x['bytes_per_window']:.3f}"),
        ("bits/byte incl. padding", lambda x: f"{x['bits_per_byte']:.3f}"),
        ("M1 bits/byte in the windows", lambda x: f"{x['m1_bits_per_byte']:.3f}"),
    ]
    for name, fmt in rows:
        t.add_row(name, *(fmt(r[k]) for k in keys))
    for c in ("mixture", "stdlib"):
        cost = r[f"{c}/zeros"]["bytes_per_window"] - r[f"{c}/straddle"]["bytes_per_window"]
        r[f"{c}/backoff_cost_bytes_per_window"] = cost
    t.add_row(
        "back-off cost (bytes/window)",
        f"{r['mixture/backoff_cost_bytes_per_window']:.3f}",
        "",
        f"{r['stdlib/backoff_cost_bytes_per_window']:.3f}",
        "",
    )
    for name in r["baselines/mixture"]:
        t.add_row(
            f"{name} bits/byte",
            f"{r['baselines/mixture'][name]:.3f}",
            "",
            f"{r['baselines/stdlib'][name]:.3f}",
            "",
        )
    Console().print(t)


def print_speed(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    sp = r["speed"]
    s = Table(
        title=f"speed: {sp['bytes']:,} bytes in {sp['segments']:,} segments, {sp['lanes']} lanes "
        "(medians; shared machine: timings are noisy)"
    )
    s.add_column("")
    s.add_column("value", justify="right")
    flops = r["matmul_flops"]
    runs = ", ".join(
        f"{f['all_threads'] / 1e9:.0f}/{f['lanes_x_one_thread'] / 1e9:.0f}" for f in flops["runs"]
    )
    s.add_row(
        "float32 matmul (1024^3), all threads / lanes x 1 thread (runs)",
        f"{flops['median_all_threads'] / 1e9:.1f} / {flops['median_lanes_x_one_thread'] / 1e9:.1f} "
        f"GFLOP/s ({runs})",
    )
    s.add_row("reference = the larger, median", f"{flops['median'] / 1e9:.1f} GFLOP/s")
    s.add_row("bound = reference / (2 N_params)", f"{r['bound_bytes_per_s']:,.0f} bytes/s")
    s.add_row("encode (whole sample, tail included)", f"{sp['encode_bytes_per_s']:,.0f} bytes/s")
    s.add_row("encoder useful FLOP/s / reference FLOP/s", f"{100 * r['encoder_fraction_of_bound']:.1f}%")
    s.add_row(
        "encode, steady state (until a row first idles)",
        f"{sp['encode_steady_bytes_per_s']:,.0f} bytes/s ({100 * r['encoder_steady_fraction_of_bound']:.1f}%)",
    )
    s.add_row(
        "decode (whole sample)",
        f"{sp['decode_bytes_per_s']:,.0f} bytes/s ({100 * r['decoder_fraction_of_bound']:.1f}%)",
    )
    s.add_row(
        "M1 positions computed per encoded byte (padding rows included / busy rows)",
        f"{sp['encode_row_positions_per_byte']:.3f} / {sp['encode_busy_positions_per_byte']:.3f}",
    )
    s.add_row(
        "lane time: M1 forward / quantize / Python coder + GIL waits",
        f"{100 * sp['encode_forward_share']:.0f}% / {100 * sp['encode_quantize_share']:.0f}% / "
        f"{100 * sp['encode_coder_share']:.0f}%",
    )
    s.add_row("positions/s inside the forward (per lane)", f"{sp['positions_per_s_in_forward']:,.0f}")
    Console().print(s)


# ------------------------------------------------------------------------------------ Exact M1
# `--exact`: the cost of exactness. For each size, a float M1 and an exact M1 (quantization-aware
# training) are trained on the same bytes for the same tokens, and the float one is also converted
# with `m1 quantize` (calibration + a short QAT fine-tune); held-out bits/byte of all three through
# their frequency tables (what the coder pays) on the same held-out blocks, then encode/decode speed
# of the float and the exact path on the same sample in the same run.


def exact_speed_only(args: argparse.Namespace) -> int:
    """Windows-mode (EqualInfoAC) encode/decode speed of a float and an exact M1 of the same shape
    on the same mixture sample: the two take turns, one repeat each per round, medians reported."""
    sample = mixture_sample(args.docs, args.exact_speed_bytes)
    models = {
        name: M1.load(path, threads=args.threads)
        for name, path in zip(("float", "exact"), args.exact_speed_models, strict=True)
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, m1 in models.items():
            sp = speed(m1, sample, args.window_bits, args.batch_size, 1, args.segment_bytes, args.threads)
            runs[name].append(sp)
        loads.append(os.getloadavg()[0])
    keys = ("encode_bytes_per_s", "decode_bytes_per_s", "encode_bytes_per_cpu_s", "decode_bytes_per_cpu_s")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    print(
        f"\nWindows mode (b = {args.window_bits}, batch {args.batch_size}), {sum(len(d) for d in sample):,} bytes, median of "
        f"{args.repeats}, lanes {models['exact'].lanes}, load average {min(loads):.1f}-{max(loads):.1f}"
    )
    print("| M1 | encode | decode | encode per CPU second | decode per CPU second |")
    print("|---|---:|---:|---:|---:|")
    for name, path in zip(models, args.exact_speed_models, strict=True):
        print(f"| {name} ({path}) | " + " | ".join(f"{med[name][k] / 1e3:.1f} kB/s" for k in keys) + " |")
    e, f = med["exact"], med["float"]
    print(
        f"exact / float: encode {e['encode_bytes_per_s'] / f['encode_bytes_per_s']:.2f}x, "
        f"decode {e['decode_bytes_per_s'] / f['decode_bytes_per_s']:.2f}x; per CPU second: encode "
        f"{e['encode_bytes_per_cpu_s'] / f['encode_bytes_per_cpu_s']:.2f}x, "
        f"decode {e['decode_bytes_per_cpu_s'] / f['decode_bytes_per_cpu_s']:.2f}x"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"runs": runs, "loads": loads}, indent=2), encoding="utf-8")
    return 0


def exactness(args: argparse.Namespace) -> int:
    from compresslm.coding.m1_train import (
        corpus_bytes,
        heldout_bits_per_byte,
        quantize_m1,
        split_heldout,
        train_m1,
    )

    out = Path(args.exact_out)
    texts = [d.decode("utf-8") for d in builtin_docs(args.exact_docs)]
    _, heldout, _ = split_heldout(corpus_bytes(texts), 128, 0.05)
    sample = mixture_sample(args.docs, args.exact_speed_bytes)
    results: dict[str, Any] = {"corpus_bytes": sum(len(t.encode()) for t in texts), "sizes": {}}
    for spec in args.exact_sizes.split(","):
        size, _, tok = spec.partition("=")
        tokens = int(float(tok.rstrip("kM")) * {"k": 1e3, "M": 1e6}.get(tok[-1:], 1)) if tok else 1_000_000
        row: dict[str, Any] = {"tokens": tokens}
        for numerics in ("float", "exact"):
            path = out / f"m1-{size}-{tokens}-{numerics}"
            if not (path / "config.json").is_file():
                t = time.perf_counter()
                train_m1(
                    texts,
                    size=size,
                    context=128,
                    max_tokens=tokens,
                    lr=2e-3,
                    threads=args.threads,
                    out=path,
                    numerics=numerics,
                    progress=False,
                    force=True,
                )
                row[f"{numerics}_train_s"] = time.perf_counter() - t
            m1 = M1.load(path, threads=args.threads)
            row[f"{numerics}_bits_per_byte"] = heldout_bits_per_byte(
                m1, heldout, 128, max_tokens=args.exact_eval_bytes
            )
            row[f"{numerics}_speed"] = speed(
                m1, sample, args.window_bits, args.batch_size, args.repeats, args.segment_bytes, args.threads
            )
            row[f"{numerics}_speed"].pop("matmul_flops_runs")
        qpath = out / f"m1-{size}-{tokens}-quantized"
        if not (qpath / "config.json").is_file():
            quantize_m1(
                out / f"m1-{size}-{tokens}-float",
                texts,
                out=qpath,
                max_tokens=tokens // 10,
                threads=args.threads,
                progress=False,
                force=True,
            )
        row["quantized_bits_per_byte"] = heldout_bits_per_byte(
            M1.load(qpath, threads=args.threads), heldout, 128, max_tokens=args.exact_eval_bytes
        )
        results["sizes"][size] = row
        print_exactness({**results, "sizes": {size: row}}, args)  # each size as soon as it is done
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    print_exactness(results, args)
    return 0


def print_exactness(r: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nExact M1: cost of exactness (held-out bits/byte through the frequency tables, {r['corpus_bytes']:,} "
        f"corpus bytes, 5% held out; speed at batch {args.batch_size}, window bits {args.window_bits})"
    )
    print(
        "| size | tokens | float | exact (QAT) | exact vs float | float -> m1 quantize | "
        "encode float / exact (kB/s) | decode float / exact (kB/s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, row in r["sizes"].items():
        f, e, q = row["float_bits_per_byte"], row["exact_bits_per_byte"], row["quantized_bits_per_byte"]
        fs, es = row["float_speed"], row["exact_speed"]
        print(
            f"| {size} | {row['tokens']:,} | {f:.4f} | {e:.4f} | {100 * (e / f - 1):+.2f}% | {q:.4f} "
            f"({100 * (q / f - 1):+.2f}%) | {fs['encode_bytes_per_s'] / 1e3:.1f} / {es['encode_bytes_per_s'] / 1e3:.1f} "
            f"| {fs['decode_bytes_per_s'] / 1e3:.1f} / {es['decode_bytes_per_s'] / 1e3:.1f} |"
        )


# ----------------------------------------------------------------------------- neural compression


def peers(data: bytes) -> dict[str, int]:
    """Compressed sizes of ``data`` with the usual tools at their strongest settings."""
    import brotli

    ldm = zstandard.ZstdCompressionParameters.from_level(19, enable_ldm=True, window_log=27)
    return {
        "gzip -9": len(gzip.compress(data, 9, mtime=0)),
        "xz -9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
        "zstd -19 --long": len(zstandard.ZstdCompressor(compression_params=ldm).compress(data)),
        "brotli -q 11": len(brotli.compress(data, quality=11)),
    }


def context_study(
    model_dir: str, data: bytes, overlaps: tuple[int, ...] = (0, 32, 64, 96)
) -> list[dict[str, Any]]:
    """Cross-entropy of a float M1 on ``data`` read in rows of ``[BOS] + L - 1`` bytes: ``overlap``
    0 restarts every ``L`` bytes (stream mode); ``overlap`` K keeps the last K bytes as context, so
    each row predicts ``L - K`` new bytes and costs ``L / (L - K)`` model positions per byte."""
    from compresslm.coding.m1 import BOS
    from compresslm.models.checkpoint import load_model

    model, _, _ = load_model(model_dir)
    model = model.float().eval()
    L = model.config.max_seq_len
    x = torch.tensor(list(data), dtype=torch.long)
    out = []
    for k in overlaps:
        new = L - k
        inputs, targets, weights = [], [], []
        for s in range(0, len(data), new):
            ctx = max(0, s - k)
            chunk = x[ctx : s + new]  # context bytes, then the new ones
            row = torch.full((L,), BOS, dtype=torch.long)
            row[1 : len(chunk)] = chunk[:-1] if len(chunk) else chunk
            tgt = torch.full((L,), -100, dtype=torch.long)
            tgt[: len(chunk)] = chunk
            tgt[: s - ctx] = -100  # context bytes are not predicted again
            inputs.append(row)
            targets.append(tgt)
            weights.append(len(chunk) - (s - ctx))
        nll = 0.0
        with torch.no_grad():
            for i in range(0, len(inputs), 64):
                logits = model(torch.stack(inputs[i : i + 64]))[..., :256]
                nll += float(
                    torch.nn.functional.cross_entropy(
                        logits.reshape(-1, 256), torch.stack(targets[i : i + 64]).reshape(-1), reduction="sum"
                    )
                )
        out.append(
            {
                "overlap": k,
                "bits_per_byte": nll / len(data) / 0.6931471805599453,
                "positions_per_byte": L / new,
                "bytes": sum(weights),
            }
        )
    return out


def coder_alone(rows: int = 512, steps: int = 200) -> dict[str, float]:
    """The stream coder without a model: bytes per CPU second of the vectorized range coder over
    ``rows`` rows of random peaked tables (CPU time, so other jobs on the machine count less).
    The coder's compiled kernels are loaded (first call) before the timed run."""
    import numpy as np

    from compresslm.coding.intervals import quantize
    from compresslm.coding.range_coder import VectorDecoder, VectorEncoder

    if steps > 1:
        coder_alone(2, 1)
    rng = np.random.default_rng(0)
    tables = quantize(rng.dirichlet(np.full(256, 0.05), size=rows).astype(np.float32), 14)
    k = np.arange(rows)
    draws = [rng.integers(0, tables[:, -1]) for _ in range(steps)]
    symbols = [np.count_nonzero(tables[:, 1:] <= u[:, None], axis=1) for u in draws]
    enc = VectorEncoder(rows)
    t = time.process_time()
    for s in symbols:
        lo = tables[k, s]
        enc.encode(k, lo, tables[k, s + 1] - lo, tables[:, 256])
    codes = [enc.finish(r) for r in range(rows)]
    t_enc = time.process_time() - t
    dec = VectorDecoder(rows, b"".join(codes))
    offsets = np.cumsum([0] + [len(c) for c in codes])
    for r, c in enumerate(codes):
        dec.start(r, int(offsets[r]), len(c))
    t = time.process_time()
    ok = all((dec.decode(k, tables) == s).all() for s in symbols)
    t_dec = time.process_time() - t
    assert ok
    return {"encode_bytes_per_cpu_s": rows * steps / t_enc, "decode_bytes_per_cpu_s": rows * steps / t_dec}


class BigramTables:
    """A model for timing a coder alone: the table of the next byte is one of 257 random peaked
    tables, picked by the previous byte (a flatter one after START), so windows have realistic
    lengths while a model step costs one gather. Implements the coder's ``FrequencyModel``."""

    precision = 14

    def __init__(self, seed: int = 0, concentration: float = 0.02) -> None:
        import numpy as np

        from compresslm.coding.intervals import quantize

        rng = np.random.default_rng(seed)
        probs = rng.dirichlet(np.full(256, concentration), size=257)
        probs[256] = rng.dirichlet(np.full(256, 1.0))
        self.tables = quantize(probs.astype(np.float32), self.precision)
        self.start_table = self.tables[256]

    def sample(self, n: int, seed: int) -> bytes:
        """``n`` bytes of the Markov chain the tables define."""
        import numpy as np

        rng = np.random.default_rng(seed)
        out, prev = bytearray(), int(rng.integers(0, 256))
        for u in rng.random(n):
            cum = self.tables[prev]
            prev = int(np.searchsorted(cum, u * cum[-1], side="right")) - 1
            out.append(prev)
        return bytes(out)

    def session(self, n_rows: int, max_len: int) -> BigramTables:
        self.n_rows = n_rows
        return self

    def step(self, tokens: Any) -> Any:
        import numpy as np

        from compresslm.coding.window_coder import RESTART

        return self.tables[np.where(tokens >= RESTART, tokens - RESTART, np.maximum(tokens, 0))]


def window_coder_alone(
    rows: int, unit_bytes: int = 400, window_bits: int = 16, repeats: int = 3
) -> dict[str, Any]:
    """The window coder without a model: bytes per CPU second (best of ``repeats``) of the scalar
    and the vectorized coder on the same ``rows`` units (one per row) of :class:`BigramTables`;
    both must write the same windows and read the units back."""
    from compresslm.coding.intervals import CoderParams
    from compresslm.coding.window_coder import EncodeStats, decode_units, encode_units

    model = BigramTables()
    units = [model.sample(unit_bytes, seed) for seed in range(rows)]
    lengths = [len(u) for u in units]
    n = sum(lengths)
    params = CoderParams(window_bits=window_bits)
    out: dict[str, Any] = {"rows": rows, "bytes": n}
    windows = {}
    for name, vectorized in (("scalar", False), ("vector", True)):
        t_enc, t_dec = [], []
        for _ in range(repeats):
            stats = EncodeStats()
            t = time.process_time()
            windows[name] = encode_units(
                units, model, params, batch_size=rows, stats=stats, vectorized=vectorized
            )
            t_enc.append(time.process_time() - t)
            coded = [([w.code for w in ws], exception_table(ws)) for ws in windows[name]]
            t = time.process_time()
            back = decode_units(coded, model, params, lengths=lengths, batch_size=rows, vectorized=vectorized)
            t_dec.append(time.process_time() - t)
            assert back == units, f"{name} coder does not round-trip"
        out[name] = {"encode_bytes_per_cpu_s": n / min(t_enc), "decode_bytes_per_cpu_s": n / min(t_dec)}
        out["bytes_per_window"] = n / stats.windows
        out["bits_per_byte"] = stats.ideal_bits / n
    out["identical"] = windows["scalar"] == windows["vector"]
    return out


def windows_coder(args: argparse.Namespace) -> int:
    """Windows mode, the scalar coder against the vectorized one: the coder alone, then
    ``compress --mode windows`` and ``decompress`` of stdlib files with an M1, CPU seconds."""
    import os
    import tempfile

    from compresslm.coding.compress import compress, decompress

    results: dict[str, Any] = {
        "coder_alone": window_coder_alone(args.batch_size, window_bits=args.window_bits)
    }
    files, total = [], 0
    for name, data in stdlib_files("sample", args.windows_bytes * 4):
        if total + len(data) <= args.windows_bytes:
            files.append((name, data))
            total += len(data)
    m1 = M1.load(args.windows_model, threads=args.threads)
    results.update(model=args.windows_model, n_params=m1.n_params, files=len(files), bytes=total)
    with tempfile.TemporaryDirectory(dir="bench-out") as tmp:
        src = Path(tmp, "in")
        for i, (_, data) in enumerate(files):
            (src / f"{i:04d}.py").parent.mkdir(parents=True, exist_ok=True)
            (src / f"{i:04d}.py").write_bytes(data)
        clm = {}
        for name, vectorized in (("scalar", False), ("vector", True)):
            EqualInfoCoder.vectorized = vectorized  # what compress and decompress build
            out = Path(tmp, f"{name}.clm")
            t, w = time.process_time(), time.perf_counter()
            compress(
                src, out, model=m1, mode="windows", window_bits=args.window_bits, batch_size=args.batch_size
            )
            enc, enc_wall = time.process_time() - t, time.perf_counter() - w
            t, w = time.process_time(), time.perf_counter()
            decompress(out, Path(tmp, f"{name}-out"), model=m1, batch_size=args.batch_size)
            dec, dec_wall = time.process_time() - t, time.perf_counter() - w
            same = all(
                Path(tmp, f"{name}-out", f"{i:04d}.py").read_bytes() == data
                for i, (_, data) in enumerate(files)
            )
            clm[name] = out.read_bytes()
            results[name] = {
                "compress_bytes_per_cpu_s": total / enc,
                "decompress_bytes_per_cpu_s": total / dec,
                "compress_wall_s": enc_wall,
                "decompress_wall_s": dec_wall,
                "restored": same,
                "clm_bytes": len(clm[name]),
            }
        EqualInfoCoder.vectorized = True
    results["identical_clm"] = clm["scalar"] == clm["vector"]
    results["load_average"] = os.getloadavg()
    print_windows_coder(results, args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    ok = results["identical_clm"] and results["coder_alone"]["identical"]
    return 0 if ok and all(results[k]["restored"] for k in ("scalar", "vector")) else 1


def print_windows_coder(r: dict[str, Any], args: argparse.Namespace) -> None:
    c = r["coder_alone"]
    print(
        f"\nWindows coder alone (best of 3): {c['rows']} rows, {c['bytes']:,} bytes of random peaked bigram tables "
        f"({c['bits_per_byte']:.2f} bits/byte, {c['bytes_per_window']:.2f} bytes/window, b={args.window_bits}); "
        f"same windows: {c['identical']}"
    )
    print("| coder | encode (kB per CPU s) | decode (kB per CPU s) |")
    print("|---|---:|---:|")
    for k in ("scalar", "vector"):
        print(
            f"| {k} | {c[k]['encode_bytes_per_cpu_s'] / 1e3:,.0f} | {c[k]['decode_bytes_per_cpu_s'] / 1e3:,.0f} |"
        )
    print(
        f"\ncompress --mode windows / decompress, M1 {Path(r['model']).name} ({r['n_params']:,} params), "
        f"{r['files']} stdlib files, {r['bytes']:,} bytes, {args.batch_size} rows; "
        f"identical .clm: {r['identical_clm']}; load average {', '.join(f'{x:.1f}' for x in r['load_average'])}"
    )
    print(
        "| coder | compress (kB per CPU s) | decompress (kB per CPU s) | wall compress / decompress | restored |"
    )
    print("|---|---:|---:|---:|---|")
    for k in ("scalar", "vector"):
        m = r[k]
        print(
            f"| {k} | {m['compress_bytes_per_cpu_s'] / 1e3:.1f} | {m['decompress_bytes_per_cpu_s'] / 1e3:.1f} | "
            f"{m['compress_wall_s']:.1f} s / {m['decompress_wall_s']:.1f} s | {m['restored']} |"
        )


def stdlib_sample(limit_bytes: int) -> list[tuple[str, bytes]]:
    """Files of the stdlib sample, none larger than a quarter of the sample."""
    return [(n, d) for n, d in stdlib_files("sample", limit_bytes * 4) if len(d) <= limit_bytes // 4][:200]


def stream_speed(args: argparse.Namespace) -> int:
    """Stream mode with each exact M1 on ``--stream-bytes`` of stdlib files (one stream, segments
    sized to fill ``--batch-size`` rows): encode and decode bytes/s and bytes per CPU second of
    this process, the step through the fused kernels and through torch ops taking turns in each
    repeat; the matmul bound and the load average measured beside them."""
    from compresslm.coding.compress import stream_segment_bytes
    from compresslm.coding.stream import StreamCoder

    data, total = [], 0
    for _, d in stdlib_files("all", 0):
        data.append(d[: args.stream_bytes - total])
        total += len(data[-1])
        if total >= args.stream_bytes:
            break
    joined = b"".join(data)
    units = segment(joined, stream_segment_bytes(len(joined), args.batch_size))
    paths = ("kernels",) if args.kernels_only else ("kernels", "torch")
    runs: dict[tuple[str, str], dict[str, list[float]]] = {}
    models = {d: M1.load(d, threads=args.threads) for d in args.stream_speed}
    flops, loads = [], [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for d, m1 in models.items():
            for path in paths:
                m1.kernels = path == "kernels"
                r = runs.setdefault((d, path), {k: [] for k in ("enc", "enc_cpu", "dec", "dec_cpu")})
                times, identical = timed_stream_round_trip(StreamCoder(m1, batch_size=args.batch_size), units)
                if not identical:
                    raise SystemExit(f"{d} ({path}): the round trip changed the bytes")
                for key, seconds in times.items():
                    r[key].append(seconds)
        flops.append(matmul_reference(args.threads, max(m.lanes for m in models.values()))["reference"])
        loads.append(os.getloadavg()[0])
    n = len(joined)
    print(
        f"\nStream mode, {n:,} stdlib bytes, {len(units)} segments, {args.batch_size} rows, "
        f"median of {args.repeats} (kB/s; per CPU second of this process)"
    )
    print(
        "| M1 | step | lanes | encode | decode | encode per CPU s | decode per CPU s | bound | decode / bound |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (d, path), r in runs.items():
        m1 = models[d]
        bound = statistics.median(flops) / (2 * m1.n_params)
        med = {k: statistics.median(v) for k, v in r.items()}
        print(
            f"| {Path(d).name} | {path} | {m1.lanes} | {n / med['enc'] / 1e3:.1f} | {n / med['dec'] / 1e3:.1f} | "
            f"{n / med['enc_cpu'] / 1e3:.1f} | {n / med['dec_cpu'] / 1e3:.1f} | {bound / 1e3:.1f} | "
            f"{100 * n / med['dec'] / bound:.1f}% |"
        )
    print(f"load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}")
    if args.json:
        out = {f"{Path(d).name}/{path}": r for (d, path), r in runs.items()}
        Path(args.json).write_text(
            json.dumps({"bytes": n, "runs": out, "loads": loads, "flops": flops}, indent=2)
        )
    return 0


def neural(args: argparse.Namespace) -> int:
    """Stream mode with each M1 on held-out files: bits/byte per file and as one stream against the
    peers, windows mode on the same bytes, encode/decode speed against the matmul bound."""
    from compresslm.coding.compress import stream_segment_bytes
    from compresslm.coding.stream import StreamCoder

    if args.files:
        paths = sorted(
            {p for spec in args.files for p in Path().glob(spec) if p.is_file()}
            | {Path(f) for f in args.files if Path(f).is_file()}
        )
        files = [(str(p), p.read_bytes()) for p in paths]
    else:
        files, total = [], 0
        for name, data in stdlib_sample(args.neural_bytes):
            if total + len(data) > args.neural_bytes:
                break
            files.append((name, data))
            total += len(data)
    docs = [d for _, d in files]
    joined = b"".join(docs)
    n = len(joined)
    results: dict[str, Any] = {"files": len(files), "bytes": n, "models": {}}
    if args.context_study:
        results["context_study"] = context_study(args.context_study, joined)
    results["coder_alone"] = coder_alone(args.batch_size)
    per_file = {k: 0 for k in peers(b"")}
    for d in docs:
        for k, v in peers(d).items():
            per_file[k] += v
    results["peers_per_file"] = {k: 8 * v / n for k, v in per_file.items()}
    results["peers_stream"] = {k: 8 * v / n for k, v in peers(joined).items()}
    models = {d: M1.load(d, threads=args.threads) for d in (args.neural_models if args.neural else [])}
    seg = stream_segment_bytes(n, args.batch_size)
    units = segment(joined, seg)
    for model_dir, m1 in models.items():
        row: dict[str, Any] = {"n_params": m1.n_params, "numerics": m1.numerics, "lanes": m1.lanes}
        coder = StreamCoder(m1, batch_size=args.batch_size)
        # per file: each file its own segments (what `compress folder/` does)
        file_units, _ = split(docs, seg)
        codes = coder.encode_many(file_units)
        row["stream_per_file_bits_per_byte"] = 8 * sum(len(c) for c in codes) / n
        row["m1_bits_per_byte"] = coder.stats.ideal_bits / n
        # one stream: the concatenation
        codes = coder.encode_many(units)
        row["stream_bits_per_byte"] = 8 * sum(len(c) for c in codes) / n
        row["segment_bytes"] = seg
        row["segments"] = len(units)
        row["identical"] = True
        row["encode_s_runs"], row["decode_s_runs"] = [], []
        row["encode_cpu_s_runs"], row["decode_cpu_s_runs"] = [], []  # process CPU time, all lanes
        wcoder = EqualInfoCoder(m1, args.window_bits, batch_size=args.batch_size)
        wunits, _ = split(docs, DEFAULT_SEGMENT_BYTES)
        t = time.perf_counter()
        windows = wcoder.encode_many(wunits)
        row["windows_encode_bytes_per_s"] = n / (time.perf_counter() - t)
        row["windows_bits_per_byte"] = args.window_bits * sum(len(w) for w in windows) / n
        results["models"][model_dir] = row
    # Speed: the models take turns within each repeat (float and exact M1s side by side under the
    # same load), then the medians; the matmul reference and the load average after each repeat.
    flops, loads = [], [os.getloadavg()[0]]
    for _ in range(args.repeats if models else 0):
        for model_dir, m1 in models.items():
            row = results["models"][model_dir]
            times, identical = timed_stream_round_trip(StreamCoder(m1, batch_size=args.batch_size), units)
            row["encode_s_runs"].append(times["enc"])
            row["encode_cpu_s_runs"].append(times["enc_cpu"])
            row["decode_s_runs"].append(times["dec"])
            row["decode_cpu_s_runs"].append(times["dec_cpu"])
            row["identical"] = row["identical"] and identical
        flops.append(matmul_reference(args.threads, max(m.lanes for m in models.values()))["reference"])
        loads.append(os.getloadavg()[0])
    results["load_average_1min"] = loads
    for model_dir, m1 in models.items():
        row = results["models"][model_dir]
        row["encode_bytes_per_s"] = n / statistics.median(row["encode_s_runs"])
        row["decode_bytes_per_s"] = n / statistics.median(row["decode_s_runs"])
        row["encode_bytes_per_cpu_s"] = n / statistics.median(row["encode_cpu_s_runs"])
        row["decode_bytes_per_cpu_s"] = n / statistics.median(row["decode_cpu_s_runs"])
        row["bound_bytes_per_s"] = statistics.median(flops) / (2 * m1.n_params)
    print_neural(results, args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0 if all(r["identical"] for r in results["models"].values()) else 1


def print_neural(r: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nNeural compression: {r['files']} held-out files, {r['bytes']:,} bytes (bits/byte; lower is better)"
    )
    print("| compressor | per file | as one stream |")
    print("|---|---:|---:|")
    for k in r["peers_stream"]:
        print(f"| {k} | {r['peers_per_file'][k]:.3f} | {r['peers_stream'][k]:.3f} |")
    for name, m in r["models"].items():
        label = f"M1 {Path(name).name} ({m['n_params']:,} params, {m['numerics']})"
        print(
            f"| {label}: stream mode | {m['stream_per_file_bits_per_byte']:.3f} | {m['stream_bits_per_byte']:.3f} |"
        )
        print(f"| {label}: windows mode, b={args.window_bits} | | {m['windows_bits_per_byte']:.3f} |")
        print(f"| {label}: M1 cross-entropy | {m['m1_bits_per_byte']:.3f} | |")
    if r["models"]:
        print(
            f"\n| M1 | numerics | lanes | segments | encode | decode | matmul bound | encode / bound | "
            f"decode / bound | encode / decode per CPU s | windows-mode encode |  (median of {args.repeats})"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, m in r["models"].items():
            b = m["bound_bytes_per_s"]
            print(
                f"| {Path(name).name} | {m['numerics']} | {m['lanes']} | {m['segments']} x {m['segment_bytes']:,} B | "
                f"{m['encode_bytes_per_s'] / 1e3:.1f} kB/s | {m['decode_bytes_per_s'] / 1e3:.1f} kB/s | "
                f"{b / 1e3:.1f} kB/s | {100 * m['encode_bytes_per_s'] / b:.1f}% | "
                f"{100 * m['decode_bytes_per_s'] / b:.1f}% | {m['encode_bytes_per_cpu_s'] / 1e3:.1f} / "
                f"{m['decode_bytes_per_cpu_s'] / 1e3:.1f} kB | {m['windows_encode_bytes_per_s'] / 1e3:.1f} kB/s |"
            )
        pairs = [
            (f, e)
            for f, mf in r["models"].items()
            for e, me in r["models"].items()
            if mf["numerics"] == "float32"
            and me["numerics"] != "float32"
            and mf["n_params"] == me["n_params"]
        ]
        for f, e in pairs:
            mf, me = r["models"][f], r["models"][e]
            print(
                f"exact / float ({Path(e).name} / {Path(f).name}, same run): encode "
                f"{me['encode_bytes_per_s'] / mf['encode_bytes_per_s']:.2f}x, decode "
                f"{me['decode_bytes_per_s'] / mf['decode_bytes_per_s']:.2f}x"
            )
        loads = r["load_average_1min"]
        print(f"load average (1 min) during the speed runs: {min(loads):.1f}-{max(loads):.1f}")
    c = r["coder_alone"]
    print(
        f"\nThe stream coder alone (random tables, {args.batch_size} rows, per CPU second): encode "
        f"{c['encode_bytes_per_cpu_s'] / 1e3:,.0f} kB/s, decode {c['decode_bytes_per_cpu_s'] / 1e3:,.0f} kB/s"
    )
    if "context_study" in r:
        print(f"\nContext ({args.context_study}): restart every L bytes vs sliding windows keeping K bytes")
        print("| kept context K | bits/byte | model positions per byte |")
        print("|---:|---:|---:|")
        for c in r["context_study"]:
            print(f"| {c['overlap']} | {c['bits_per_byte']:.4f} | {c['positions_per_byte']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
