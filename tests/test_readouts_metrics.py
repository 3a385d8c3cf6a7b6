import math

import pytest
import torch

from dldl_core.distributions import bin_grid
from dldl_core.metrics import balanced_mae, cumulative_score, epsilon_error, interval_coverage, mae
from dldl_core.readouts import credible_interval, expectation, mode, std, summarize

BINS = bin_grid(0, 9, 1)


def test_point_mass():
    p = torch.zeros(1, 10)
    p[0, 6] = 1.0
    assert float(expectation(p, BINS)) == 6.0
    assert float(mode(p, BINS)) == 6.0
    assert float(std(p, BINS)) == 0.0
    assert credible_interval(p, BINS).tolist() == [[6.0, 6.0]]


def test_uniform_distribution():
    p = torch.full((1, 10), 0.1)
    assert float(expectation(p, BINS)) == pytest.approx(4.5)
    assert float(std(p, BINS)) == pytest.approx(math.sqrt(8.25))
    # 10% in each tail: the lower end is bin 0 (cdf 0.1), the upper bin 8 (cdf 0.9)
    assert credible_interval(p, BINS, 0.8).tolist() == [[0.0, 8.0]]
    assert credible_interval(p, BINS, 0.6).tolist() == [[1.0, 7.0]]


def test_two_point_distribution_and_summary():
    p = torch.zeros(1, 10)
    p[0, 2], p[0, 7] = 0.3, 0.7
    out = summarize(p, BINS)[0]
    assert out["mean"] == pytest.approx(5.5)
    assert out["mode"] == 7.0
    assert out["std"] == pytest.approx(math.sqrt(0.3 * 0.7) * 5, abs=0.01)
    assert out["interval"] == [2.0, 7.0]
    assert len(out["probs"]) == 10 and sum(out["probs"]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        credible_interval(p, BINS, 1.0)


def test_metrics_on_hand_made_cases():
    pred = torch.tensor([10.0, 20.0, 30.0, 40.0])
    true = torch.tensor([12.0, 20.0, 37.0, 35.0])
    assert mae(pred, true) == pytest.approx((2 + 0 + 7 + 5) / 4)
    assert cumulative_score(pred, true, 5) == 0.75
    assert cumulative_score(pred, true, 1) == 0.25
    iv = torch.tensor([[8.0, 14.0], [21.0, 25.0], [25.0, 37.0], [30.0, 34.9]])
    assert interval_coverage(iv, true) == 0.5


def test_epsilon_error():
    mean, sd = torch.tensor([30.0, 30.0]), torch.tensor([4.0, 4.0])
    assert epsilon_error(mean, mean, sd) == 0.0
    assert epsilon_error(torch.tensor([34.0, 26.0]), mean, sd) == pytest.approx(1 - math.exp(-0.5))
    assert epsilon_error(torch.tensor([90.0, 90.0]), mean, sd) == pytest.approx(1.0)


def test_joint_moments_recover_mean_and_spread_of_a_2d_gaussian():
    from dldl_core.distributions import gaussian_2d
    from dldl_core.readouts import joint_moments

    bins = bin_grid(-90, 90, 3)
    p = gaussian_2d(torch.tensor([[20.0, -10.0]]), bins, bins, torch.tensor([[4.0, 8.0]]))
    mean, cov = joint_moments(p, bins, bins)
    assert mean[0].tolist() == pytest.approx([20.0, -10.0], abs=1e-3)
    assert cov[0].flatten().tolist() == pytest.approx([16.0, 0.0, 0.0, 64.0], abs=0.05)
    # a distribution concentrated on the diagonal has positive covariance
    d = torch.zeros(1, 61, 61)
    d[0, 20, 20] = d[0, 40, 40] = 0.5
    assert float(joint_moments(d, bins, bins)[1][0, 0, 1]) > 0


def test_auroc_counts_ordered_pairs():
    from dldl_core.metrics import auroc

    positive = torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool)
    assert auroc(torch.tensor([0.9, 0.8, 0.1, 0.2, 0.3]), positive) == 1.0
    assert auroc(torch.tensor([0.1, 0.2, 0.9, 0.8, 0.7]), positive) == 0.0
    assert auroc(torch.tensor([0.5, 0.2, 0.5, 0.1, 0.3]), positive) == pytest.approx((2.5 + 1) / 6)  # a tie counts half
    with pytest.raises(ValueError):
        auroc(torch.ones(3), torch.ones(3, dtype=torch.bool))


def test_balanced_mae_weighs_each_group_alike():
    target = torch.tensor([1.0, 2.0, 25.0, 26.0, 27.0, 28.0, 80.0])
    pred = target + torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 6.0])
    # groups [0, 20), [20, 70), [70, ...): MAEs 1, 0, 6 weigh alike; the plain MAE is 8 / 7
    assert balanced_mae(pred, target, (0, 20, 70)) == pytest.approx(7 / 3)
    assert balanced_mae(pred, target, (0, 20, 40, 70)) == pytest.approx(7 / 3)  # the empty group [40, 70) is skipped
    assert balanced_mae(pred, target, (0, 3)) == pytest.approx((1 + 6 / 5) / 2)
