"""NaN or inf gradients: never applied; the run stops (or skips the step), saying where.

``[training] nonfinite``:

* ``"stop"`` (default): the optimizer does not apply the step; the run
  stops with one line naming the step, writes no checkpoint after it, and
  leaves the last good checkpoint as the one to resume from (fix the cause,
  e.g. lower ``optimizer.lr``, and run again).
* ``"skip"``: the optimizer does not apply the step and training goes on;
  skipped steps are reported at the next log step.

The test is on the global gradient norm, which every rank computes alike (a
NaN anywhere in any rank's gradients makes it NaN everywhere), so all ranks
skip or stop at the same step. A NaN/inf loss gives non-finite gradients.

No host synchronisation per step with the fused optimizer (the default):
the flag stays on the device and goes to the fused AdamW/Adam kernel as
``found_inf`` (the mechanism ``torch.amp.GradScaler`` uses), which leaves
weights, moments and step count untouched when it is set. The flag is read
on the host only where the loop reads values anyway: at log steps, before a
checkpoint is saved (so none is written after a bad step), on a stop
request and at the end. In ``stop`` mode the run therefore stops at the next
of those points; the steps in between train on from the last good weights.
The ``foreach`` and ``for-loop`` optimizers have no ``found_inf``: there the
flag is read every step (one device-to-host copy per step).
"""

from __future__ import annotations

import torch

from titan.core.errors import TitanError


class NonFiniteError(TitanError):
    """Training produced NaN/inf gradients and ``training.nonfinite = "stop"``."""

    exit_code = 1


class NonFiniteGuard:
    def __init__(self, mode: str, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.mode = mode
        self.optimizer = optimizer
        self.device_side = bool(optimizer.defaults.get("fused"))
        self._count = torch.zeros((), dtype=torch.int64, device=device)
        self._first = torch.zeros((), dtype=torch.int64, device=device)
        self._reported = 0  # skipped steps already reported
        self.skipped_steps = 0

    def allow_step(self, step: int, grad_norm: torch.Tensor) -> bool:
        """Before ``optimizer.step()``: False when the step must not run (host-checked path)."""
        bad = ~torch.isfinite(grad_norm.detach())
        if self.device_side:
            self.optimizer.found_inf = bad.to(torch.float32)  # type: ignore[attr-defined]
            self._first = torch.where((self._count == 0) & bad, step, self._first)
            self._count = self._count + bad.to(torch.int64)
            return True
        if bool(bad):
            if int(self._count) == 0:
                self._first.fill_(step)
            self._count += 1
            return False
        return True

    def check(self, step: int, where: str) -> str:
        """Read the flag (a host sync). Raises in stop mode; returns a skip note or ''."""
        count = int(self._count)
        if count == 0:
            return ""
        first = int(self._first)
        if self.mode == "stop":
            seen = "" if first == step else f" (seen at step {step}, {where})"
            raise NonFiniteError(
                f"non-finite (NaN/inf) gradients at step {first}{seen}; the optimizer did not "
                "apply them and no checkpoint was written after them; fix the cause (lower "
                "optimizer.lr, raise lr_scheduler.warmup_steps, set training.max_norm) and run "
                'again to resume from the last checkpoint, or set training.nonfinite = "skip"'
            )
        self.skipped_steps = count
        new = count - self._reported
        self._reported = count
        if not new:
            return ""
        return (
            f"skipped {new} optimizer step(s) with non-finite gradients "
            f'({count} in this run, the first at step {first}; training.nonfinite = "skip")'
        )
