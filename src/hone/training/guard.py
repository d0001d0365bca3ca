"""When to give up on non-finite steps: a NaN or infinite loss or gradient, or an fp16 loss-scale overflow.

Every skipped step is counted; a run of them stops training after ``max_nonfinite_steps`` in a row. Under
fp16 the loss scaler skips steps while it backs its scale off from 2**16 to a scale the gradients fit in;
those skips are expected and only flagged. Once the scale is below 1 an overflow means the gradient itself
does not fit in fp16, so from then on each skip counts towards the limit like a NaN does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class NonFiniteGuard:
    limit: int
    in_a_row: int = 0
    last_reason: str = ""

    def observe(self, *, loss: float, grad_norm: float | None, fp16: bool, scaler_skipped: bool,
                loss_scale: float | None) -> bool:
        """Record one optimizer step's outcome; True when the step was skipped (the weights did not move)."""
        bad_loss = not math.isfinite(loss)
        bad_grad = grad_norm is not None and not math.isfinite(grad_norm) and not fp16
        if bad_loss or bad_grad:
            self.in_a_row += 1
            self.last_reason = "the loss or gradient is not finite"
            return True
        if scaler_skipped:
            if loss_scale is None or loss_scale < 1.0:
                self.in_a_row += 1
                self.last_reason = (f"the fp16 gradient overflows even at loss scale {loss_scale}" if loss_scale
                                    is not None else "the fp16 gradient overflows")
            return True
        self.in_a_row = 0
        return False

    @property
    def stop(self) -> bool:
        return self.in_a_row >= self.limit
