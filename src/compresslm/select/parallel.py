"""Process-pool helpers for scoring: core count, malloc tuning, and a bounded, ordered map.

Why not ``multiprocessing.Pool.imap``: its task thread drains the whole input iterator up front, so
memory grows with the pool size; and a worker killed by the OOM killer makes it wait forever. The
map here keeps at most ``max_in_flight`` tasks submitted, yields results in submission order
(deterministic output whatever the scheduling), turns a dead worker into an error, and on Ctrl-C
or any error terminates the workers instead of waiting for them.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from compresslm.errors import CompressLMError

T = TypeVar("T")
R = TypeVar("R")

# glibc mallopt parameters (malloc.h): M_TRIM_THRESHOLD = -1, M_TOP_PAD = -2, M_MMAP_THRESHOLD = -3.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap (and are reused) instead of a fresh mmap each time.
#: 32 MiB is glibc's own ceiling for its dynamic threshold; setting any parameter disables the
#: dynamic adjustment, so it must be set explicitly too (without it lzma:6 ran 5x slower, ~4,000
#: page faults per call, as its multi-MB match-finder buffers were mapped and faulted every call).
MMAP_THRESHOLD = 32 << 20
#: Freed memory at the top of the heap is kept up to this size instead of being returned to the OS
#: (twice the mmap threshold, the ratio glibc's dynamic adjustment keeps).
TRIM_THRESHOLD = 64 << 20
#: Extra memory requested with every heap growth, so the next growth is rarely needed.
TOP_PAD = 4 << 20


def default_workers() -> int:
    """The cores this process may run on (affinity and cgroup cpusets), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """``None`` or 0 -> every available core; negative values are an error."""
    if workers is None or workers == 0:
        return default_workers()
    if workers < 0:
        raise CompressLMError(f"workers must be a positive number of processes, got {workers}")
    return workers


def tune_malloc() -> bool:
    """Stop glibc from returning the heap top to the OS after every call (returns whether it did).

    Each ``zlib.compress`` allocates ~270 KB of DEFLATE state in five pieces below the mmap
    threshold and frees them on return; when they sit at the top of the heap, glibc trims that top
    (it exceeds the default 128 KB trim threshold) and the next call faults the pages back in. On a
    loop of 1-2 KB inputs that can cost 2.5-4.5x (docs/design.md#zip-fit). A high trim threshold and a top pad
    keep the pages mapped; the mmap threshold is pinned at glibc's own dynamic maximum (see
    :data:`MMAP_THRESHOLD`). A no-op (False) where the C library is not glibc.

    Measured here (glibc 2.36): a loop of level-9 ``zlib.compress`` calls on 1.5 KB inputs, in a heap
    state where the trap triggers, took 233 us and 19 page faults per call; after this, 56 us and 0.
    Whether the trap triggers depends on the heap layout, so it is applied unconditionally (once
    per process; later calls return the first result).
    """
    global _TUNED
    if _TUNED is None:
        _TUNED = _mallopt_all()
    return _TUNED


_TUNED: bool | None = None


def _mallopt_all() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The running program's own symbols include the C library's; ctypes.util.find_library would
        # spawn ldconfig (tens of ms), too slow for a per-call path.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt symbol)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = [
        mallopt(param, value)
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
        )
    ]
    return all(ok)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a scheduler's time limit) like Ctrl-C while the block runs.

    Python's default SIGTERM action ends the process at once, skipping every ``finally``: the
    temporaries of atomic outputs stay behind and worker pools are not stopped. Raising
    ``KeyboardInterrupt`` instead runs the same clean-up as Ctrl-C. Only the main thread can
    install handlers; elsewhere this does nothing.
    """

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this worker when its parent dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def _worker_start(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    # Ctrl-C reaches the whole process group; only the parent handles it (and terminates us), so a
    # worker never dies half-way with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the parent's SIGTERM-as-Ctrl-C handler; the parent ends us with
    # SIGTERM, which must end us (the default action), not raise inside a task.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    tune_malloc()
    if initializer is not None:
        initializer(*initargs)


def _terminate(executor: ProcessPoolExecutor) -> None:
    """Kill the workers now; ``shutdown`` alone would wait for running tasks to finish."""
    terminate_workers = getattr(executor, "terminate_workers", None)  # Python 3.14+
    if terminate_workers is not None:
        terminate_workers()
        return
    for proc in list((getattr(executor, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


# How long the main thread sleeps at most while waiting for a result (see :func:`_result`).
WAKE_SECONDS = 0.2


def _result(future: Future[R]) -> R:
    """``future.result()``, waking every :data:`WAKE_SECONDS`.

    CPython runs a Python signal handler (Ctrl-C's ``KeyboardInterrupt``) only when the main thread
    executes bytecode; POSIX lets the kernel deliver a process-directed signal to any thread that
    does not block it, and then nothing wakes a main thread blocked in one unbounded wait, so Ctrl-C
    could wait for a long task to finish. Short waits bound that delay. (Not
    ``result(timeout=...)``: the task's own ``TimeoutError`` would be mistaken for ours.)"""
    while not wait([future], timeout=WAKE_SECONDS).done:
        pass
    return future.result()


def ordered_map(
    func: Callable[[T], R],
    tasks: Iterable[T],
    *,
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    max_in_flight: int | None = None,
    start_method: str | None = None,
) -> Iterator[R]:
    """``map(func, tasks)`` over ``workers`` processes, in order, with bounded memory.

    ``func`` and ``initializer`` must be module-level functions (they are pickled under spawn);
    ``initializer(*initargs)`` runs once per worker, so large shared inputs (the targets) travel
    once per worker instead of once per task. At most ``max_in_flight`` (default ``2 * workers``)
    tasks are pending, so the input iterator is consumed only as fast as results come back.
    Abandoning the iterator (``break``, an exception, Ctrl-C) terminates the workers.
    """
    limit = max_in_flight or 2 * workers
    context = multiprocessing.get_context(start_method) if start_method else None
    executor = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_worker_start, initargs=(initializer, initargs)
    )
    pending: deque[Future[R]] = deque()
    clean = False
    try:
        task_iter = iter(tasks)
        exhausted = False
        while True:
            while not exhausted and len(pending) < limit:
                try:
                    task = next(task_iter)
                except StopIteration:
                    exhausted = True
                    break
                pending.append(executor.submit(func, task))
            if not pending:
                break
            yield _result(pending.popleft())
        clean = True
    except BrokenProcessPool as exc:
        raise CompressLMError(
            "a worker process died unexpectedly (killed, or out of memory?); "
            "try fewer --workers (or --jobs), or a smaller --batch-size"
        ) from exc
    finally:
        if clean:
            executor.shutdown(wait=True)
        else:
            _terminate(executor)
