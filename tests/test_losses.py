import numpy as np
import pytest
import torch

from dldl_core.distributions import bin_grid, gaussian_1d
from dldl_core.losses import dldl_loss, expectation_l1, kl_from_logits


def test_kl_is_zero_at_equality_and_positive_elsewhere():
    bins = bin_grid(0, 100, 1)
    target = gaussian_1d(torch.tensor([20.0, 70.0]), bins, 2.0)
    logits = target.log()
    assert abs(float(kl_from_logits(logits, target))) < 1e-5
    assert float(kl_from_logits(logits + torch.randn_like(logits), target)) > 0.01


def test_kl_is_finite_for_extreme_logits_and_one_hot_targets():
    target = torch.zeros(2, 5)
    target[:, 2] = 1.0  # zeros in the target must contribute nothing
    logits = torch.tensor([[1e4, -1e4, 0.0, 3.0, -2.0], [0.0, 0.0, 80.0, 0.0, 0.0]])
    assert torch.isfinite(kl_from_logits(logits, target))


def test_kl_gradient_matches_finite_differences():
    torch.manual_seed(0)
    bins = bin_grid(0, 20, 1).double()
    target = gaussian_1d(torch.tensor([5.0, 12.5]), bins, 2.0).double()
    logits = torch.randn(2, 21, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: kl_from_logits(z, target), (logits,))
    labels = torch.tensor([5.0, 12.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: dldl_loss(z, target, bins, labels, lam=0.5), (logits,))


def test_kl_gradient_is_softmax_minus_target():
    target = gaussian_1d(torch.tensor([3.0]), bin_grid(0, 9, 1), 1.0)
    logits = torch.randn(1, 10, requires_grad=True)
    kl_from_logits(logits, target).backward()
    assert torch.allclose(logits.grad, torch.softmax(logits.detach(), 1) - target, atol=1e-6)


def test_expectation_term():
    bins = bin_grid(0, 10, 1)
    logits = torch.full((1, 11), -40.0)
    logits[0, 4] = 0.0  # (nearly) all mass on 4
    assert float(expectation_l1(logits, bins, torch.tensor([7.0]))) == pytest.approx(3.0)
    target = gaussian_1d(torch.tensor([7.0]), bins, 1.0)
    plain = dldl_loss(logits, target, bins, torch.tensor([7.0]), lam=0.0)
    assert float(dldl_loss(logits, target, bins, torch.tensor([7.0]), lam=2.0) - plain) == pytest.approx(6.0, abs=1e-3)


def test_js_consistency_is_zero_for_equal_views_and_matches_its_definition():
    from dldl_core.losses import js_consistency

    a, b = torch.randn(5, 12), torch.randn(5, 12)
    assert float(js_consistency(a, a)) == pytest.approx(0.0, abs=1e-6)
    p, q = torch.softmax(a, 1), torch.softmax(b, 1)
    m = (p + q) / 2
    expected = 0.5 * ((p * (p / m).log()).sum(1) + (q * (q / m).log()).sum(1)).mean()
    assert float(js_consistency(a, b)) == pytest.approx(float(expected), rel=1e-4)
    assert float(js_consistency(a, b)) <= np.log(2) + 1e-6


def test_age_consistency_pairs_two_views_of_the_same_faces():
    from train.age import AgeConfig, AgeTask

    task = AgeTask(AgeConfig(consistency=1.0, degrade=1.0))
    images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8)
    labels = torch.arange(8, dtype=torch.float32) * 10  # sorted, as the engine hands UTKFace's rows over
    torch.manual_seed(0)
    x, y = task.train_batch(images, labels)
    assert x.shape[0] == 8 and torch.equal(y[:4], y[4:])
    # the faces paired span the batch's ages: the first half alone trained only the young
    assert float(y.min()) == 0 and float(y.max()) >= 60
    assert not torch.allclose(x[:4], x[4:])  # the same faces, differently degraded
    outputs = {"age": torch.randn(8, 101, requires_grad=True)}
    plain = AgeTask(AgeConfig(consistency=0.0)).loss(outputs, y)
    assert float(task.loss(outputs, y)) > float(plain)


def test_a_teachers_faces_are_learned_as_its_distributions():
    from dldl_core.losses import dldl_loss
    from train.age import AgeConfig, AgeTask

    task = AgeTask(AgeConfig(lam=1.0))
    taught = torch.softmax(torch.randn(2, 101) * 3, 1)
    task.taught = taught
    labels = torch.tensor([30.0, -1.0, -2.0])  # a UTKFace age, then the teacher's faces 0 and 1
    logits = torch.randn(3, 101)
    bins = torch.arange(101.0)
    target = torch.cat([task._target(labels[:1]), taught])
    ages = torch.cat([labels[:1], (taught * bins).sum(1)])  # the teacher's mean stands in for the age
    expected = dldl_loss(logits, target, bins, ages, 1.0)
    assert float(task.loss({"age": logits}, labels)) == pytest.approx(float(expected), rel=1e-5)
    assert float(task.loss({"age": logits}, torch.tensor([30.0, 20.0, 40.0]))) != pytest.approx(float(expected), rel=1e-3)


def test_age_consistency_can_pair_a_color_view_with_a_gray_one():
    from train.age import AgeConfig, AgeTask

    task = AgeTask(AgeConfig(consistency=1.0, consistency_gray=1.0, degrade=0.0))
    torch.manual_seed(0)
    x, _ = task.train_batch(torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8), torch.arange(8.0))
    from dldl_core.transforms import IMAGENET_MEAN, IMAGENET_STD

    pixels = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    channel_gap = (pixels - pixels.mean(1, keepdim=True)).abs().amax(dim=(1, 2, 3))
    # brightness jitter is added after normalisation, so gray stays gray within a few hundredths
    assert (channel_gap[4:] < 0.02).all() and (channel_gap[:4] > 0.3).all()


def _pair_gaps(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between the two views of each consistency pair (the batch's halves),
    each view standardised: brightness and contrast jitter differ per view, so only what moves or
    covers pixels tells the views apart."""
    z = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)
    half = len(z) // 2
    return (z[:half] - z[half:]).abs().mean(dim=(1, 2, 3))


@pytest.mark.parametrize("framing", [False, True])
def test_age_consistency_views_share_their_framing_unless_asked_not_to(framing):
    from train.age import AgeConfig, AgeTask

    task = AgeTask(AgeConfig(consistency=1.0, consistency_framing=framing, degrade=0.0))
    torch.manual_seed(0)
    x, _ = task.train_batch(torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8), torch.arange(8.0))
    gap = _pair_gaps(x)
    assert (gap > 0.1).all() if framing else (gap < 1e-4).all()


def test_age_erasing_covers_each_view_of_a_consistency_pair_on_its_own():
    from train.age import AgeConfig, AgeTask

    task = AgeTask(AgeConfig(consistency=1.0, erase=1.0, degrade=0.0))
    torch.manual_seed(0)
    faces = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8)
    x, _ = task.train_batch(faces, torch.arange(8.0))
    assert (_pair_gaps(x) > 0.05).all()  # without erasing the views are equal (above)


def test_age_mixup_blends_faces_and_their_label_distributions_alike():
    from train.age import AgeConfig, AgeTask

    task = AgeTask(AgeConfig(mixup=0.2, degrade=0.0))
    torch.manual_seed(0)
    labels = torch.arange(8, dtype=torch.float32) * 10
    x, y = task.train_batch(torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8), labels)
    assert x.shape[0] == 8 and y.shape == (8, 3)
    a, b, w = y.unbind(1)
    assert torch.equal(a, labels) and set(b.tolist()) == set(labels.tolist())  # the partners are the batch's own faces
    assert ((w >= 0.5) & (w <= 1)).all()  # each face stays the larger part of its blend
    logits = {"age": torch.randn(8, 101)}
    plain = AgeTask(AgeConfig(lam=0.0))
    same = torch.stack([a, a, torch.rand(8)], 1)  # blending a face's labels with itself changes nothing
    assert float(AgeTask(AgeConfig(mixup=0.2, lam=0.0)).loss(logits, same)) == pytest.approx(float(plain.loss(logits, a)), rel=1e-5)
    blend = torch.stack([torch.full((8,), 20.0), torch.full((8,), 60.0), torch.full((8,), 0.75)], 1)
    target = 0.75 * plain._target(torch.full((8,), 20.0)) + 0.25 * plain._target(torch.full((8,), 60.0))
    from dldl_core.losses import kl_from_logits

    assert float(plain.loss(logits, blend)) == pytest.approx(float(kl_from_logits(logits["age"], target)), rel=1e-5)
    with pytest.raises(SystemExit, match="mixup or --consistency"):
        AgeTask(AgeConfig(mixup=0.2, consistency=1.0))


def test_weighted_dldl_loss_is_the_weighted_mean_of_each_example_loss():
    bins = bin_grid(0, 100, 1)
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 101), torch.tensor([3.0, 20.0, 45.0, 80.0])
    target = gaussian_1d(labels, bins, 2.0)
    each = torch.stack([dldl_loss(logits[i : i + 1], target[i : i + 1], bins, labels[i : i + 1], 1.0) for i in range(4)])
    w = torch.tensor([1.0, 0.5, 2.0, 4.0])
    assert float(dldl_loss(logits, target, bins, labels, 1.0, w)) == pytest.approx(float((each * w).sum() / w.sum()), rel=1e-5)
    assert float(dldl_loss(logits, target, bins, labels, 1.0, torch.full((4,), 3.0))) == pytest.approx(float(each.mean()), rel=1e-5)


def test_age_balance_weighs_faces_by_the_rarity_of_their_age_in_train():
    from train.age import AgeConfig, AgeTask

    train_ages = torch.cat([torch.full((900,), 25.0), torch.full((100,), 70.0)])
    plain, balanced = AgeTask(AgeConfig(lam=0.0)), AgeTask(AgeConfig(lam=0.0, balance=0.5))
    for task in (plain, balanced):
        task.statistics(np.zeros((0, 1, 1, 3), np.uint8), train_ages)
    assert plain.age_weight is None
    torch.manual_seed(0)
    logits, ages = {"age": torch.randn(2, 101)}, torch.tensor([25.0, 70.0])
    each = torch.stack([plain.loss({"age": logits["age"][i : i + 1]}, ages[i : i + 1]) for i in range(2)])
    w = balanced.age_weight[ages.long()]
    assert float(w[1] / w[0]) == pytest.approx(3.0, rel=0.01)  # nine times rarer: three times the weight
    assert float(balanced.loss(logits, ages)) == pytest.approx(float((each * w).sum() / w.sum()), rel=1e-5)
