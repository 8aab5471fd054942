"""Garbage collection at fixed steps instead of whenever Python decides (as torchtitan does).

An automatic collection can start in the middle of any step on any rank; with
many ranks, one rank collecting makes all the others wait for it at the next
collective. With automatic collection off during the training loop and a
collection every ``every`` steps, every rank collects at the same step, where
the pause is short (young generations only) and predictable.
"""

from __future__ import annotations

import gc

GC_EVERY = 50
"""Steps between collections (torchtitan's default ``training.gc_freq``)."""


class GarbageCollection:
    """Context manager for the training loop: automatic gc off inside, ``step(n)`` collects."""

    def __init__(self, every: int = GC_EVERY) -> None:
        self.every = every
        self._was_enabled = False

    def __enter__(self) -> GarbageCollection:
        self._was_enabled = gc.isenabled()
        gc.disable()
        gc.collect(1)  # start the loop with the build's garbage gone
        return self

    def step(self, step: int) -> None:
        """Collect the young generations on every ``every``-th step."""
        if step > 1 and step % self.every == 0:
            gc.collect(1)

    def __exit__(self, *exc: object) -> None:
        # Trainers also run inside other programs (tests, notebooks): give them their gc back.
        if self._was_enabled:
            gc.enable()
