"""How much training a time budget affords: which variants, how many screening epochs, how many finalists.

Why: the defaults (five fusion variants screened for 8 epochs, two finalists trained to early stopping)
take 9 minutes on the Scientific data, but an epoch grows with the events: a shop with a million events
and long histories spends minutes per epoch, and the same defaults would train for hours. `fusionrec
train --time-budget` measures the first epoch and plans the rest from it, so any shop gets a bundle in
bounded time; on data where the defaults fit, the plan is the defaults (and the bundle does not depend on
the clock). Pure arithmetic: no torch, no clock.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["TrainingPlan", "plan_training"]

#: share of the training time the screening may take; the finalists get the rest
SCREEN_SHARE = 0.4
#: epochs a finalist should get at least; fewer finalists are kept when the time does not allow it
MIN_FINAL_EPOCHS = 4


@dataclass(frozen=True)
class TrainingPlan:
    variants: int  # the first `variants` of the list train; the rest are skipped for time
    screen_epochs: int  # epochs every variant trains before the cut (0: no screening)
    keep: int  # finalists trained on (0: all that train)
    binding: bool  # the budget changed the defaults

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def plan_training(
    n_variants: int,
    screen_epochs: int,
    keep: int,
    epoch_s: float,
    train_s: float | None,
    *,
    screen_share: float = SCREEN_SHARE,
    min_final_epochs: int = MIN_FINAL_EPOCHS,
) -> TrainingPlan:
    """The plan for `n_variants` given the requested `screen_epochs` / `keep`, the measured seconds of
    one epoch (validation included) and `train_s` seconds for all training (None: no budget)."""
    screening = 0 < keep < n_variants and screen_epochs > 0
    default = TrainingPlan(n_variants, screen_epochs if screening else 0, keep if screening else 0, False)
    finalists = keep if screening else n_variants
    if train_s is None or epoch_s <= 0:
        return default
    needed = (n_variants * screen_epochs if screening else 0) + finalists * min_final_epochs
    if needed * epoch_s <= train_s:
        return default  # the defaults fit (early stopping decides how long the finalists go on)
    if not screening:  # every variant trains to the end: as many as the time allows, in list order
        variants = max(1, min(n_variants, math.floor(train_s / (min_final_epochs * epoch_s))))
        return TrainingPlan(variants, 0, 0, True)
    variants = n_variants
    affordable = math.floor(screen_share * train_s / epoch_s)  # screening epochs, all variants together
    epochs = min(screen_epochs, affordable // n_variants)
    if epochs < 1:  # not one epoch each: fewer variants, one epoch each
        variants, epochs = max(1, min(n_variants, affordable)), 1
    left = train_s - variants * epochs * epoch_s
    finalists = max(1, min(keep, variants, math.floor(left / (min_final_epochs * epoch_s))))
    if finalists >= variants:  # nothing left to screen away: they all train to the end
        return TrainingPlan(variants, 0, 0, True)
    return TrainingPlan(variants, epochs, finalists, True)
