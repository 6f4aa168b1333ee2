"""Thread plumbing for the streaming chain: each stage a daemon thread, joined by bounded queues.

A stage runs `work(upstream)` (a generator) and hands its items on; an error in any stage travels
downstream and is raised in the consumer's thread; setting the shared stop event ends every stage
within a tenth of a second. Time a stage spends producing items, minus the time it waited for its
upstream, is charged to its name in a `Profile`.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable, Iterator

_END = object()
_wait = threading.local()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Profile:
    """Seconds of work per stage name, added to from every stage thread."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def _waited() -> float:
    return getattr(_wait, "seconds", 0.0)


class Stage:
    """`work(upstream)` (a generator) run in a daemon thread, its items handed on through a bounded
    queue. Time spent producing items, minus time waiting for upstream, is charged to `name`."""

    def __init__(self, name: str, work: Callable[[Iterable], Iterator], upstream: Iterable, maxsize: int,
                 profile: Profile, stop: threading.Event) -> None:
        self.name, self.work, self.upstream = name, work, upstream
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.profile, self.stop = profile, stop
        self.thread = threading.Thread(target=self._run, name=f"wav2lip-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        _wait.seconds = 0.0
        items = None
        try:
            items = iter(self.work(self.upstream))
            while not self.stop.is_set():
                start, waited = time.perf_counter(), _waited()
                try:
                    item = next(items)
                except StopIteration:
                    break
                self.profile.add(self.name, time.perf_counter() - start - (_waited() - waited))
                self._put(item)
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it in its thread
            self._put(_Failure(exc))
        finally:
            if hasattr(items, "close"):
                items.close()

    def _put(self, item: object) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator:
        while True:
            start = time.perf_counter()
            while True:
                try:
                    item = self.queue.get(timeout=0.1)
                    break
                except queue.Empty:
                    if self.stop.is_set():
                        return
            _wait.seconds = _waited() + time.perf_counter() - start
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
