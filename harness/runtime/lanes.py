"""Two model calls at once, on half the cores each: ONNX Runtime beside PyTorch.

At the batch sizes a gate checks, neither framework turns a second core into much speed. On the
2-core dev machine the default model (ConvNeXt, batch 1) runs in 26.5 ms in PyTorch on 2 threads
and 27.9 ms on one; ONNX Runtime in 11.8 and 15.2 ms. Run one after the other on both cores, a
parity case's PyTorch and ONNX Runtime calls took 36-111 ms (batch 1-8). Side by side, one thread
each, they took 79-85% of that; two ONNX Runtime calls on one thread each (batch consistency's
whole batch beside its parts) 81-92%. This is an xdist worker's share of the cores inside one process, so that the
model and the sessions are not loaded twice.

Only ONNX Runtime runs in the background lane: its threads belong to its session, while
PyTorch's thread count is process-wide. While a pair runs, PyTorch in the foreground is held to
its lane's threads; with more threads than cores, its spinning workers and ONNX Runtime's took
each other's cores, and the pair ran slower than the two calls in turn.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

# Lanes hold a second ONNX Runtime session (the lane's own threads): above this artifact size the
# memory of a second copy of the weights is not worth the seconds, and the calls of a model this
# large use their threads well anyway.
LANES_MAX_BYTES = 1 << 30


class Beside(Generic[T]):
    """A call running in the background lane, or deferred until ``result`` where there is none."""

    def __init__(self, future: Future[T] | None, call: Callable[[], T]) -> None:
        self._future = future
        self._call = call

    def result(self) -> T:
        """The call's value (the wait for it, where it runs beside: the time it adds)."""
        return self._future.result() if self._future is not None else self._call()

    def _settle(self) -> None:
        if self._future is not None:
            # Joined on every path: a foreground that failed must not leave a call running behind
            # (its own error, if it has one, is raised by ``result``; the foreground's wins here).
            with contextlib.suppress(Exception):
                self._future.result()


class Lanes:
    """``threads`` per lane; with 0 there is one lane and ``beside`` defers its call (calls in turn)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="onnx-gate-lane") if threads else None

    @classmethod
    def sequential(cls) -> Lanes:
        return cls(0)

    @property
    def parallel(self) -> bool:
        return self._pool is not None

    @contextlib.contextmanager
    def beside(self, function: Callable[..., T], *args: Any) -> Iterator[Beside[T]]:
        """Run ``function(*args)`` in the background lane while the block runs PyTorch on the
        foreground lane's threads; the block reads the value with ``result()``."""
        if self._pool is None:
            yield Beside(None, lambda: function(*args))
            return
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        handle = Beside(self._pool.submit(function, *args), lambda: function(*args))
        try:
            yield handle
        finally:
            handle._settle()
            torch.set_num_threads(previous)

    def pair(self, background: Callable[[], T], foreground: Callable[[], Any]) -> tuple[T, Any]:
        """``background()`` and ``foreground()``, side by side where there are two lanes."""
        with self.beside(background) as other:
            first = foreground()
            return other.result(), first

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
