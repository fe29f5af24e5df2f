"""Where the per-shard stages run: this machine's hardened process pool, or a Ray cluster.

Both engines execute the same thing: ``fn(context, task)`` for every task, where ``context`` is the
large, read-only state of a stage (the prepared selection method, the tokenizer folder) and a task
is one input shard (a small dict of strings and numbers). The context travels once per worker --
to each process of the local pool through its initializer, to each actor of a Ray Data actor pool
through its constructor -- so compressors, dictionaries and models load once per worker, not once
per shard. Results are small dicts (paths, counts, hashes): what a stage produces in bulk it writes
to files in the work directory itself, so nothing large ever flows back to the driver.

* :class:`LocalEngine` runs the tasks through :func:`compresslm.select.parallel.ordered_map` (Ctrl-C,
  dead parents and killed workers handled there), or in this process for one worker.
* :class:`RayEngine` builds a Ray Data dataset of the tasks (``from_items``, one block per shard)
  and maps it with ``map_batches`` over an actor pool of ``workers`` actors, ``num_cpus`` each. It
  connects to ``address`` (default: the ``RAY_ADDRESS`` environment variable) or starts a local Ray
  with ``workers * num_cpus`` CPUs, which it shuts down again when the engine closes.

Results come back in task order on both engines (Ray's are sorted by task number), so every
driver-side merge is deterministic.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from compresslm.errors import CompressLMError, ConfigError
from compresslm.select.parallel import ordered_map, resolve_workers

C = TypeVar("C")
ENGINES = ("local", "ray")

StageFn = Callable[[Any, dict[str, Any]], dict[str, Any]]


class Engine(Protocol):
    """Runs ``fn(context, task)`` for each task; results in task order."""

    name: str
    workers: int

    def map(
        self, fn: StageFn, context: Any, tasks: Sequence[dict[str, Any]], *, stage: str
    ) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


# --- local: the hardened process pool -----------------------------------------------------------

_CONTEXT: tuple[StageFn, Any] | None = None


def _set_context(fn: StageFn, context: Any) -> None:
    global _CONTEXT
    _CONTEXT = (fn, context)


def _run_task(task: dict[str, Any]) -> dict[str, Any]:
    assert _CONTEXT is not None, "worker used before its initializer ran"
    fn, context = _CONTEXT
    return fn(context, task)


class LocalEngine:
    """This machine: ``workers`` processes of the shared pool (1 = in this process, no pool)."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = resolve_workers(workers)

    def map(
        self, fn: StageFn, context: Any, tasks: Sequence[dict[str, Any]], *, stage: str
    ) -> Iterator[dict[str, Any]]:
        if not tasks:
            return iter(())
        if self.workers == 1 or len(tasks) == 1:
            return (fn(context, t) for t in tasks)
        return ordered_map(
            _run_task,
            list(tasks),
            workers=min(self.workers, len(tasks)),
            initializer=_set_context,
            initargs=(fn, context),
            max_in_flight=2 * self.workers,
        )

    def close(self) -> None:
        pass


# --- Ray Data --------------------------------------------------------------------------------------


class _RayStage:
    """One actor of a stage's actor pool: holds the context, runs one task per batch row."""

    def __init__(self, fn: StageFn, context: Any, cwd: str) -> None:
        from compresslm.select.parallel import tune_malloc

        # Each actor is a process of its own: relative input paths resolve as on the driver (on a
        # cluster, inputs and the work directory must sit at the same path on every node).
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        tune_malloc()
        self.fn = fn
        self.context = context

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import json

        results = [json.dumps(self.fn(self.context, json.loads(task))) for task in batch["task"]]
        return {"n": batch["n"], "result": results}


class RayEngine:
    """A Ray cluster through Ray Data; see the module docstring."""

    name = "ray"

    def __init__(
        self, workers: int | None = None, *, address: str | None = None, num_cpus: float = 1
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--engine ray needs Ray Data: pip install 'compresslm[ray]' (ray[data]>=2.60)"
            ) from None
        if num_cpus <= 0:
            raise ConfigError(f"--num-cpus must be positive, got {num_cpus}")
        self.num_cpus = num_cpus
        address = address or os.environ.get("RAY_ADDRESS") or None
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if address:
                ray.init(address=address, **kwargs)
            else:
                local_workers = resolve_workers(workers)
                ray.init(num_cpus=max(1, int(local_workers * num_cpus + 0.999)), **kwargs)
            self._started = True
        if workers is None or workers == 0:
            total = ray.cluster_resources().get("CPU", 1)
            workers = max(1, int(total // num_cpus))
        self.workers = resolve_workers(workers)
        import logging

        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-execution INFO lines on stderr

    def map(
        self, fn: StageFn, context: Any, tasks: Sequence[dict[str, Any]], *, stage: str
    ) -> Iterator[dict[str, Any]]:
        import json

        import ray.data

        if not tasks:
            return iter(())
        items = [{"n": i, "task": json.dumps(t)} for i, t in enumerate(tasks)]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        out = ds.map_batches(
            _RayStage,
            fn_constructor_kwargs={"fn": fn, "context": context, "cwd": os.getcwd()},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(items))),
            num_cpus=self.num_cpus,
        )
        results: dict[int, dict[str, Any]] = {}
        try:
            for row in out.iter_rows():
                results[int(row["n"])] = json.loads(row["result"])
        except Exception as exc:
            raise _user_error(exc) from exc
        return (results[i] for i in range(len(items)))

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def _user_error(exc: BaseException) -> BaseException:
    """Our own error inside Ray's wrappers (task error -> user code exception -> ours), re-raised
    as itself so the CLI prints one line instead of a remote traceback; else ``exc``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, CompressLMError):
            return type(e)(*e.args)
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return exc


def make_engine(
    name: str, workers: int | None = None, *, address: str | None = None, num_cpus: float = 1
) -> LocalEngine | RayEngine:
    """The engine called ``name`` (``local`` or ``ray``); close it when done."""
    if name == "local":
        if address:
            raise ConfigError("--ray-address needs --engine ray")
        return LocalEngine(workers)
    if name == "ray":
        return RayEngine(workers, address=address, num_cpus=num_cpus)
    raise ConfigError(f"unknown engine '{name}' (choose from: {', '.join(ENGINES)})")
