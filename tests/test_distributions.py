import pytest
import torch

from dldl_core.distributions import bin_grid, density_weights, gaussian_1d, gaussian_2d, nearest_bin


def test_bin_grid_includes_both_ends():
    b = bin_grid(0, 100, 1)
    assert len(b) == 101 and b[0] == 0 and b[-1] == 100
    assert torch.allclose(bin_grid(-90, 90, 3)[:3], torch.tensor([-90.0, -87.0, -84.0]))


def test_gaussian_1d_sums_to_one_and_peaks_at_label():
    bins = bin_grid(0, 100, 1)
    p = gaussian_1d(torch.tensor([0.0, 28.0, 63.0, 100.0]), bins, 2.0)
    assert torch.allclose(p.sum(1), torch.ones(4))
    assert p.argmax(1).tolist() == [0, 28, 63, 100]
    # symmetric around an interior label
    assert torch.allclose(p[1, 28 - 5], p[1, 28 + 5])


def test_gaussian_1d_widens_with_sigma():
    bins = bin_grid(0, 100, 1)
    labels = torch.tensor([50.0])
    stds = []
    for sigma in (1.0, 2.0, 4.0):
        p = gaussian_1d(labels, bins, sigma)[0]
        mean = (p * bins).sum()
        stds.append(float(((p * (bins - mean) ** 2).sum()).sqrt()))
    assert stds[0] < stds[1] < stds[2]
    assert stds[2] == pytest.approx(4.0, rel=0.01)  # far from the edges it is the Gaussian's own spread


def test_gaussian_1d_per_example_sigma_and_clipping():
    bins = bin_grid(0, 100, 1)
    p = gaussian_1d(torch.tensor([116.0, 30.0]), bins, torch.tensor([2.0, 6.0]))
    assert p[0].argmax() == 100  # ages beyond the grid fall in the last bin
    assert p[1].max() < gaussian_1d(torch.tensor([30.0]), bins, 2.0).max()
    with pytest.raises(ValueError):
        gaussian_1d(torch.tensor([3.0]), bins, 0.0)


def test_gaussian_2d_on_a_grid():
    bx, by = bin_grid(-90, 90, 3), bin_grid(-90, 90, 3)
    p = gaussian_2d(torch.tensor([[30.0, -12.0]]), bx, by, 3.0)
    assert p.shape == (1, 61, 61)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-5)
    i, j = divmod(int(p[0].argmax()), 61)
    assert (float(bx[i]), float(by[j])) == (30.0, -12.0)


def test_gaussian_2d_per_axis_spread_is_symmetric_and_normalised():
    bx = by = bin_grid(-90, 90, 3)
    p = gaussian_2d(torch.tensor([[0.0, 0.0], [-45.0, 9.0]]), bx, by, torch.tensor([[3.0, 9.0], [6.0, 3.0]]))
    assert torch.allclose(p.sum((1, 2)), torch.ones(2))
    c = 30  # the bin of 0 degrees
    assert torch.allclose(p[0], p[0].flip(0)) and torch.allclose(p[0], p[0].flip(1))  # symmetric about (0, 0)
    # wider along pitch (sigma 9) than along yaw (sigma 3)
    assert p[0, c, c + 3] > p[0, c + 3, c]
    i, j = divmod(int(p[1].argmax()), 61)
    assert (float(bx[i]), float(by[j])) == (-45.0, 9.0)


def test_nearest_bin_rounds_to_the_grid_and_clips_at_its_ends():
    bins = bin_grid(0, 10, 2)
    assert nearest_bin(torch.tensor([-3.0, 0.9, 1.1, 5.2, 10.0, 40.0]), bins).tolist() == [0, 0, 1, 3, 5, 5]


def test_density_weights_lift_rare_labels_and_keep_the_mean_weight_at_one():
    bins = bin_grid(0, 100, 1)
    labels = torch.cat([torch.full((900,), 25.0), torch.full((90,), 60.0), torch.full((10,), 85.0)])
    w = density_weights(labels, bins, 0.5)
    assert w[25] < w[60] < w[85]
    assert float(w[60] / w[25]) == pytest.approx(10 ** 0.5, rel=0.01)  # a tenth of the faces: sqrt(10) times the weight
    assert float(w[nearest_bin(labels, bins)].mean()) == pytest.approx(1.0, rel=1e-4)
    assert torch.allclose(density_weights(labels, bins, 0.0), torch.ones(len(bins)))
    assert float(density_weights(labels, bins, 2.0, cap=5.0).max()) == 5.0
