import pytest

from migm.trajectories.errors import MigmError
from migm.trajectories.schedule import arccos_schedule, full_steps, steps_run, token_schedule


@pytest.mark.parametrize("L", [64, 256, 1024])
def test_token_counts_sum_to_L_and_only_trailing_steps_may_be_empty(L):
    for N in range(1, min(L, 64) + 1):
        counts = token_schedule(L, N)
        ran = steps_run(counts)
        assert len(counts) == N and sum(counts) == L and min(counts[:ran]) >= 1, (L, N, counts)
        assert counts[ran:] == [0] * (N - ran)
        assert (ran < N) == (
            arccos_schedule(L, N)[-1] <= 0
        )  # it stops early only where the published last entry is 0 or below


def test_schedule_reaching_every_cell_early_stops_the_loop_there():
    assert arccos_schedule(9, 8) == [1, 1, 1, 1, 1, 2, 2, 0] == token_schedule(9, 8)
    assert steps_run(token_schedule(9, 8)) == 7
    # the published scheduler overshoots (last entry negative): the step reaching L commits what is left
    raw, counts = arccos_schedule(64, 50), token_schedule(64, 50)
    assert raw[-1] < 0 and sum(raw[:-1]) > 64
    assert counts[-3:] == [0, 0, 0] and sum(counts) == 64 and steps_run(counts) == 47


def test_arccos_schedule_unmasks_few_tokens_first():
    counts = token_schedule(256, 12)
    assert counts[0] < counts[len(counts) // 2] < counts[-1] + counts[-2]
    assert sum(counts) == 256


def test_full_steps_are_distinct_increasing_and_start_at_zero():
    for N in range(1, 65):
        for B in range(1, N + 1):
            idx = full_steps(N, B)
            assert len(idx) == B and idx[0] == 0 and idx[-1] < N
            assert all(a < b for a, b in zip(idx, idx[1:])), (N, B, idx)
        assert full_steps(N, N) == list(range(N))


def test_published_example_placement():
    assert full_steps(32, 12) == [0, 3, 5, 8, 11, 13, 16, 19, 21, 24, 27, 29]


@pytest.mark.parametrize("N, B", [(8, 0), (8, 9), (4, -1)])
def test_bad_budget_is_a_user_error(N, B):
    with pytest.raises(MigmError):
        full_steps(N, B)


def test_more_steps_than_tokens_is_a_user_error():
    with pytest.raises(MigmError):
        token_schedule(64, 65)
    with pytest.raises(MigmError):
        token_schedule(64, 0)


def test_token_schedule_equals_the_published_rule_in_float32():
    """The published `adap_sche` (arccos, torch float32, `round` half to even, zeros raised to 1, the
    last step absorbing the remainder) at every N <= 64 for the grids in use, ties included; where it
    reaches L early the published loop commits what is left and stops."""
    import math

    import torch

    def published(N: int, L: int) -> list[int]:
        r = torch.linspace(1, 0, N)
        weights = torch.arccos(r) / (math.pi * 0.5)
        counts = (weights / weights.sum() * L).round()
        counts[counts == 0] = 1
        counts[-1] += L - counts.sum()
        return [int(c) for c in counts.tolist()]

    for L in (9, 36, 64, 256, 1024):
        for N in range(2, min(L, 64) + 1):
            expected = published(N, L)
            assert arccos_schedule(L, N) == expected, (L, N)
            left = L
            for s, count in enumerate(token_schedule(L, N)):
                assert count == max(0, min(expected[s], left)), (L, N)
                left -= count
