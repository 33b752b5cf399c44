"""Test-time augmentation: the views of each mode and the averaged softmax, against explicit loops."""

import numpy as np
import pytest

from nntrain.data.tta import predict_proba, softmax, views
from nntrain.errors import ConfigError


def _x(n=5, c=2, h=8, w=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


class _Linear:
    """A fixed linear 'network' on flattened images; counts the images it sees."""

    def __init__(self, shape, k=4, seed=1):
        self.w = np.random.default_rng(seed).standard_normal((int(np.prod(shape)), k)).astype(np.float32) * 0.3
        self.seen = 0

    def __call__(self, x):
        self.seen += len(x)
        return x.reshape(len(x), -1) @ self.w


def _ref_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("mode,count", [("none", 1), ("flip", 2), ("crops", 10), ("translate", 6), ("airbench", 6)])
def test_view_counts_and_shapes(mode, count):
    vs = list(views(_x(), mode))
    assert len(vs) == count and all(v.shape == (5, 2, 8, 8) for v in vs)
    crops = list(views(_x(h=10, w=12), mode, (8, 8)))
    assert len(crops) == count and all(v.shape == (5, 2, 8, 8) for v in crops)


def test_crops_of_larger_images_are_corners_and_centre_with_mirrors():
    x = _x(h=10, w=12)
    vs = list(views(x, "crops", (8, 8)))
    expected = [x[:, :, :8, :8], x[:, :, :8, 4:], x[:, :, 2:, :8], x[:, :, 2:, 4:], x[:, :, 1:9, 2:10]]
    for k, e in enumerate(expected):
        np.testing.assert_array_equal(vs[2 * k], e)
        np.testing.assert_array_equal(vs[2 * k + 1], e[..., ::-1])


def test_crops_of_same_size_images_pad_first():
    x = _x()
    vs = list(views(x, "crops", padding=2))
    np.testing.assert_array_equal(vs[8], x)  # the centre of the padded image is the image
    top_left = vs[0]
    np.testing.assert_array_equal(top_left[:, :, 2:, 2:], x[:, :, :6, :6])
    assert np.all(top_left[:, :, :2] == 0) and np.all(top_left[:, :, :, :2] == 0)


def test_translate_views_are_zero_filled_shifts():
    x = _x()
    vs = list(views(x, "translate", shift=1))
    np.testing.assert_array_equal(vs[0], x)
    np.testing.assert_array_equal(vs[1], x[..., ::-1])
    np.testing.assert_array_equal(vs[2][:, :, :7, :7], x[:, :, 1:, 1:])  # shifted by (-1, -1)
    assert np.all(vs[2][:, :, 7] == 0) and np.all(vs[2][:, :, :, 7] == 0)
    np.testing.assert_array_equal(vs[4][:, :, 1:, 1:], x[:, :, :7, :7])  # shifted by (+1, +1)


def test_airbench_views_are_reflect_padded_one_pixel_shifts_weighted():
    x = _x()
    vs = list(views(x, "airbench"))
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    for k, e in enumerate([x, padded[:, :, :8, :8], padded[:, :, 2:, 2:]]):
        np.testing.assert_array_equal(vs[2 * k], e)
        np.testing.assert_array_equal(vs[2 * k + 1], e[..., ::-1])
    net = _Linear((2, 8, 8))
    probs = [_ref_softmax(net(np.ascontiguousarray(v))) for v in vs]
    ref = 0.25 * (probs[0] + probs[1]) + 0.125 * sum(probs[2:])
    np.testing.assert_allclose(predict_proba(net, x, "airbench"), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["airbench", "crops"])
def test_logits_average_is_the_softmax_of_the_weighted_mean_logits(mode):
    """airbench's TTA averages logits: softmax(sum_k w_k z_k / sum_k w_k), not the mean softmax."""
    x = _x(n=5)
    net = _Linear((2, 8, 8))
    weights = [0.25, 0.25, 0.125, 0.125, 0.125, 0.125] if mode == "airbench" else [0.1] * 10
    logits = [net(np.ascontiguousarray(v)).astype(np.float64) for v in views(x, mode)]
    ref = _ref_softmax(sum(w * z for w, z in zip(weights, logits)) / sum(weights))
    got = predict_proba(net, x, mode, average="logits", batch_size=2)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, predict_proba(net, x, mode), rtol=1e-3, atol=1e-4)
    with pytest.raises(ConfigError, match="tta_average='mean'"):
        predict_proba(net, x, mode, average="mean")


@pytest.mark.parametrize("mode", ["none", "flip", "crops", "translate"])
def test_predict_proba_is_the_mean_softmax_over_views(mode):
    x = _x(n=7)
    net = _Linear((2, 8, 8))
    p = predict_proba(net, x, mode, batch_size=3)
    ref = np.mean([_ref_softmax(net(np.ascontiguousarray(v))) for v in views(x, mode)], axis=0)
    assert p.dtype == np.float32 and p.shape == (7, 4)
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)


def test_batch_size_does_not_change_the_result():
    x = _x(n=9)
    net = _Linear((2, 8, 8))
    a = predict_proba(net, x, "crops", batch_size=2)
    b = predict_proba(net, x, "crops", batch_size=100)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    net.seen = 0
    predict_proba(net, x, "crops", batch_size=4)
    assert net.seen == 9 * 10


def test_flip_invariant_network_gives_the_same_answer_with_flip_tta():
    x = _x()

    def symmetric(batch):  # logits from row sums: invariant under a left-right mirror
        return batch.sum(axis=3).reshape(len(batch), -1)[:, :4]

    np.testing.assert_allclose(predict_proba(symmetric, x, "flip"), predict_proba(symmetric, x, "none"), atol=1e-6)


def test_larger_images_with_no_tta_use_the_centre_crop():
    x = _x(h=10, w=10)
    net = _Linear((2, 8, 8))
    np.testing.assert_allclose(predict_proba(net, x, "none", input_size=(8, 8)),
                               _ref_softmax(net(np.ascontiguousarray(x[:, :, 1:9, 1:9]))), rtol=1e-5)


def test_softmax_is_stable_and_float32():
    z = np.array([[1000.0, 1000.0, -1000.0]], np.float32)
    p = softmax(z.copy())
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0]], atol=1e-7)


def test_errors():
    with pytest.raises(ConfigError, match="expected one of none, flip, crops, translate, airbench, received tta='flips'"):
        predict_proba(lambda b: b, _x(), "flips")
    with pytest.raises(ConfigError, match="smaller than the network input"):
        list(views(_x(), "none", (10, 10)))
