"""Run the stages of a stream at the same time: a source and worker stages each in a thread of
their own, the last stage in the calling thread, with a fixed number of items in flight.

    with Overlap(source, [stage, ...], in_flight=4, poll=check_cancel) as items:
        for item in items:
            ...  # the last stage, in the caller's thread

* Memory stays flat: the source takes a token before it produces an item and the caller gives it
  back when it asks for the next one, so at most `in_flight` items exist between the two however
  long the stream (the queues between stages never hold more).
* The caller's thread is the only one that runs `poll` (and whatever the caller does per item), so
  callbacks that assume one thread (progress bars, event writers) stay on it.
* Stopping answers within `poll_s`: every wait (for a token, for an item) is a timed loop that
  checks the stop event; only a stage already inside its own work (one model call) finishes first.
* The first exception in any thread stops every stage and is raised in the caller's thread as it
  was raised (same type and message); leaving the `with` block joins every thread.

Stages run under the GIL, so this pays off when they spend their time in code that releases it
(video codecs, OpenCV, OpenVINO and torch kernels).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

__all__ = ["Overlap"]

_END = object()  # the source is exhausted
_FAILED = object()  # a worker failed: the caller raises its error


class Overlap:
    """`source(stopping)` returns the items (called and iterated in the source thread; it should
    end early once `stopping()` is true); each of `stages` maps an item to the next stage's item
    in a thread of its own. Iterating the object (in the caller's thread) gives the last stage's
    items in order. `poll()` runs in the caller's thread while it waits and before each item; an
    exception it raises (e.g. Cancelled) stops the run like any other."""

    def __init__(self, source: Callable[[Callable[[], bool]], Iterable[Any]],
                 stages: Sequence[Callable[[Any], Any]] = (), *, in_flight: int = 4,
                 poll: Callable[[], None] | None = None, poll_s: float = 0.05, name: str = "overlap"):
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        self._source = source
        self._stages = list(stages)
        self._poll = poll
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._tokens = threading.Semaphore(in_flight)
        self._held = False  # whether the caller holds the token of the item it was last given
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        # Unbounded queues: the tokens bound what is in them, so a put never blocks.
        self._queues = [queue.SimpleQueue() for _ in range(len(self._stages) + 1)]
        self._threads = [threading.Thread(target=self._run_source, name=f"{name}-source", daemon=True)]
        self._threads += [threading.Thread(target=self._run_stage, args=(i,), name=f"{name}-stage{i + 1}", daemon=True)
                          for i in range(len(self._stages))]
        self._started = False
        self._finished = False

    # -- the caller's side --------------------------------------------------------------------

    def __enter__(self) -> "Overlap":
        self._started = True
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False

    def close(self) -> None:
        """Stop every stage and wait for its thread to end."""
        self._stop.set()
        if self._started:
            for t in self._threads:
                t.join()
        self._release()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if not self._started:
            raise RuntimeError("use Overlap in a with block")
        self._release()  # the caller is done with the previous item
        if self._finished:
            raise StopIteration
        last = self._queues[-1]
        while True:
            if self._poll is not None:
                self._poll_or_stop()
            try:
                item = last.get(timeout=self._poll_s)
            except queue.Empty:
                continue
            if item is _END:
                self._finished = True
                raise StopIteration
            if item is _FAILED:
                self._finished = True
                raise self._error
            self._held = True
            return item

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _poll_or_stop(self) -> None:
        try:
            self._poll()
        except BaseException:
            self._stop.set()
            raise

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._tokens.release()

    # -- the workers' side --------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._stop.is_set():
                return  # stopping already (an earlier error, the caller left): a consequence
            self._error = exc
            self._stop.set()
        self._queues[-1].put(_FAILED)

    def _take_token(self) -> bool:
        while not self._stop.is_set():
            if self._tokens.acquire(timeout=self._poll_s):
                return True
        return False

    def _run_source(self) -> None:
        out, items = self._queues[0], None
        try:
            items = iter(self._source(self._stop.is_set))
            while self._take_token():
                try:
                    item = next(items)
                except StopIteration:
                    self._tokens.release()
                    out.put(_END)
                    return
                if self._stop.is_set():
                    return
                out.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._fail(exc)
        finally:
            # A generator's own cleanup (closing the decoder) runs now, in this thread, not
            # whenever the error that references it is freed.
            close = getattr(items, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - already stopping; the first error is kept
                    pass

    def _run_stage(self, i: int) -> None:
        fn, inbox, out = self._stages[i], self._queues[i], self._queues[i + 1]
        try:
            while not self._stop.is_set():
                try:
                    item = inbox.get(timeout=self._poll_s)
                except queue.Empty:
                    continue
                if item is _END:
                    out.put(_END)
                    return
                result = fn(item)
                if self._stop.is_set():
                    return
                out.put(result)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._fail(exc)
