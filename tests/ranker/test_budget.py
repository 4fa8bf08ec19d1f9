"""The training plan a time budget affords (ranker.budget): pure arithmetic, pinned on the shapes that
matter (the Scientific data, where it must change nothing; a million-event shop, where it must)."""

from __future__ import annotations

import random

from ranker.budget import MIN_FINAL_EPOCHS, SCREEN_SHARE, TrainingPlan, plan_training


def test_where_the_defaults_fit_the_plan_is_the_defaults() -> None:
    # Scientific: ~4.5 s an epoch, 5 variants x 8 screening epochs + 2 finalists fit easily in 12 min
    assert plan_training(5, 8, 2, 4.5, 740.0) == TrainingPlan(5, 8, 2, False)
    assert plan_training(5, 8, 2, 4.5, None) == TrainingPlan(5, 8, 2, False)
    assert plan_training(3, 8, 0, 4.5, 740.0) == TrainingPlan(3, 0, 0, False)  # keep=0: no screening


def test_a_long_history_shop_trains_fewer_variants_and_epochs() -> None:
    # ~0.9 M events: 129 s an epoch (measured), 740 s to train
    assert plan_training(5, 8, 2, 129.0, 740.0) == TrainingPlan(2, 1, 1, True)
    # in between: fewer screening epochs, the same finalists
    assert plan_training(5, 8, 2, 20.0, 600.0) == TrainingPlan(5, 2, 2, True)


def test_without_time_for_one_epoch_one_variant_still_trains() -> None:
    assert plan_training(5, 8, 2, 500.0, 100.0) == TrainingPlan(1, 0, 0, True)
    assert plan_training(3, 8, 0, 100.0, 500.0) == TrainingPlan(1, 0, 0, True)


def test_a_binding_plan_keeps_its_screening_within_its_share_and_a_model_always_trains() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        n, screen, keep = rng.randint(1, 6), rng.randint(0, 10), rng.randint(0, 6)
        epoch, budget = rng.uniform(0.5, 300.0), rng.uniform(1.0, 3000.0)
        plan = plan_training(n, screen, keep, epoch, budget)
        assert 1 <= plan.variants <= n
        if not plan.binding:
            continue
        if plan.screen_epochs:
            assert 0 < plan.keep < plan.variants and plan.screen_epochs <= screen
            # one epoch of one variant always runs (to time it); beyond that, the screening keeps to its share
            assert plan.variants * plan.screen_epochs * epoch <= max(SCREEN_SHARE * budget, epoch) + 1e-9
        else:
            assert plan.keep == 0
            assert plan.variants == 1 or plan.variants * MIN_FINAL_EPOCHS * epoch <= budget + 1e-9
