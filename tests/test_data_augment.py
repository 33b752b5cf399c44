"""Augmentations: shape, dtype, determinism, and each one checked against a slow per-sample reference."""


import numpy as np
import pytest

from nntrain.data.augment import (bilinear_sample, center_crop, crop, gaussian_blur_matrix, make_augmentation,
                                  pad)
from nntrain.errors import ConfigError
from nntrain.registry import AUGMENTATIONS

SPECS = {
    "hflip": {"type": "hflip"},
    "random_crop": {"type": "random_crop", "size": 8, "padding": 2},
    "translate": {"type": "translate", "max_shift": 2},
    "cutout": {"type": "cutout", "size": 3},
    "elastic": {"type": "elastic", "alpha": 8.0, "sigma": 2.0},
    "affine": {"type": "affine", "degrees": 20, "scale": [0.8, 1.2]},
}


def _batch(n=16, c=3, h=10, w=10, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


def _one(spec):
    return make_augmentation([spec]).augmentations[0]


def test_every_registered_augmentation_is_covered():
    assert sorted(SPECS) == AUGMENTATIONS.names()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_shape_dtype_determinism_and_input_untouched(name):
    pipe = make_augmentation([SPECS[name]])
    x = _batch()
    before = x.copy()
    a = pipe(x, np.random.default_rng(5))
    b = pipe(x, np.random.default_rng(5))
    c = pipe(x, np.random.default_rng(6))
    assert a.dtype == np.float32
    assert a.shape == (16, *pipe.output_shape(x.shape[1:]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_config_round_trip(name):
    aug = _one(SPECS[name])
    cfg = aug.get_config()
    assert cfg["type"] == name
    assert _one(cfg).get_config() == cfg


# ----- hflip -----------------------------------------------------------------------------

def test_hflip():
    x = _batch()
    always = _one({"type": "hflip", "p": 1.0})
    np.testing.assert_array_equal(always(x, np.random.default_rng(0)), x[..., ::-1])
    np.testing.assert_array_equal(always(always(x, np.random.default_rng(0)), np.random.default_rng(1)), x)
    np.testing.assert_array_equal(_one({"type": "hflip", "p": 0.0})(x, np.random.default_rng(0)), x)
    big = _batch(n=2000, c=1, h=2, w=3)
    out = _one({"type": "hflip"})(big, np.random.default_rng(0))
    flipped = np.all(out == big[..., ::-1], axis=(1, 2, 3))
    kept = np.all(out == big, axis=(1, 2, 3))
    assert np.all(flipped | kept) and 0.45 < flipped.mean() < 0.55


def test_hflip_alternate_mirrors_each_image_in_every_other_epoch():
    from nntrain.data.augment import SampleIds
    aug = _one({"type": "hflip", "alternate": True})
    assert aug.uses_samples and make_augmentation([{"type": "hflip", "alternate": True}]).uses_samples
    n = 400
    x = _batch(n=n, c=1, h=2, w=3)
    idx = np.random.default_rng(1).permutation(n)  # the batch holds samples in shuffled order

    def mirrored(epoch, seed=7, rng_seed=0):
        out = aug(x[idx], np.random.default_rng(rng_seed), samples=SampleIds(idx, epoch, seed, n))
        flipped = np.all(out == x[idx][..., ::-1], axis=(1, 2, 3))
        assert np.all(flipped | np.all(out == x[idx], axis=(1, 2, 3)))
        return flipped

    e0, e1, e2 = mirrored(0), mirrored(1), mirrored(2)
    assert np.all(e0 != e1) and np.all(e0 == e2)  # every image both ways in any two consecutive epochs
    assert 0.4 < e0.mean() < 0.6
    np.testing.assert_array_equal(e0, mirrored(0, rng_seed=99))  # the coins come from seed and index only
    assert not np.array_equal(e0, mirrored(0, seed=8))
    np.testing.assert_array_equal(e0, aug.coins(7, n)[idx])
    with pytest.raises(ValueError, match="needs the sample indices"):
        aug(x, np.random.default_rng(0))


def test_added_options_stay_out_of_the_config_at_their_default():
    # results recorded before an option existed keep their config hash
    assert _one({"type": "hflip"}).get_config() == {"type": "hflip", "p": 0.5}
    assert _one({"type": "hflip", "alternate": True}).get_config() == {"type": "hflip", "p": 0.5, "alternate": True}


# ----- crops and shifts ------------------------------------------------------------------

def _reference_crop(x, top, left, h, w):
    out = np.empty((len(x), x.shape[1], h, w), x.dtype)
    for n in range(len(x)):
        out[n] = x[n, :, top[n]:top[n] + h, left[n]:left[n] + w]
    return out


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("size,padding", [(10, 2), (6, 0), (7, 3), ((5, 8), 1)])
def test_random_crop_matches_reference(mode, size, padding):
    x = _batch()
    aug = _one({"type": "random_crop", "size": size, "padding": padding, "pad_mode": mode})
    out = aug(x, np.random.default_rng(3))
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(3)
    top = rng.integers(0, 10 + 2 * padding - h + 1, len(x))
    left = rng.integers(0, 10 + 2 * padding - w + 1, len(x))
    np_mode = "constant" if mode == "zeros" else "reflect"
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), mode=np_mode)
    np.testing.assert_array_equal(out, _reference_crop(padded, top, left, h, w))
    assert len(set(zip(top.tolist(), left.tolist()))) > 1


def test_crop_at_the_padding_offset_is_identity():
    x = _batch()
    p = np.full(len(x), 4)
    np.testing.assert_array_equal(crop(pad(x, 4), p, p, (10, 10)), x)


def test_random_crop_shape_and_eval_transform():
    x = _batch(h=32, w=32)
    smaller = _one({"type": "random_crop", "size": 24})
    assert smaller.output_shape((3, 32, 32)) == (3, 24, 24)
    np.testing.assert_array_equal(smaller.eval_transform(x), x[:, :, 4:28, 4:28])
    same = _one({"type": "random_crop", "size": 32, "padding": 4})
    assert same.output_shape((3, 32, 32)) == (3, 32, 32)
    assert same.eval_transform(x) is x
    bigger = _one({"type": "random_crop", "size": 34, "padding": 4})
    ev = bigger.eval_transform(x)
    assert ev.shape == (16, 3, 34, 34)
    np.testing.assert_array_equal(ev[:, :, 1:33, 1:33], x)
    with pytest.raises(ConfigError, match=r"size 41x41 is larger than the padded image 40x40"):
        _one({"type": "random_crop", "size": 41, "padding": 4}).output_shape((3, 32, 32))
    np.testing.assert_array_equal(center_crop(x, (2, 4)), x[:, :, 15:17, 14:18])


def test_translate():
    x = _batch()
    np.testing.assert_array_equal(_one({"type": "translate", "max_shift": 0})(x, np.random.default_rng(0)), x)
    out = _one({"type": "translate", "max_shift": 3})(x, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    top, left = rng.integers(0, 7, len(x)), rng.integers(0, 7, len(x))
    for n in range(len(x)):  # reference: shift by (3 - top, 3 - left) with zero fill
        dy, dx = 3 - top[n], 3 - left[n]
        ref = np.zeros_like(x[n])
        src = x[n, :, max(0, -dy):10 - max(0, dy), max(0, -dx):10 - max(0, dx)]
        ref[:, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
        np.testing.assert_array_equal(out[n], ref)


def test_cutout():
    x = _batch() + 10  # no zeros in the input
    out = _one({"type": "cutout", "size": 4})(x, np.random.default_rng(0))
    for n in range(len(x)):
        zero = out[n, 0] == 0
        assert np.all((out[n] == 0) == zero[None])  # the same square in every channel
        rows, cols = np.flatnonzero(zero.any(1)), np.flatnonzero(zero.any(0))
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4
        assert zero.sum() == len(rows) * len(cols)  # a (clipped) rectangle
        np.testing.assert_array_equal(out[n][:, ~zero], x[n][:, ~zero])
    np.testing.assert_array_equal(_one({"type": "cutout", "size": 4, "p": 0.0})(x, np.random.default_rng(0)), x)


# ----- resampling ------------------------------------------------------------------------

def _reference_bilinear(x, sy, sx):
    n, c, h, w = x.shape
    out = np.zeros((n, c) + sy.shape[1:], np.float64)
    for k in range(n):
        for i in range(sy.shape[1]):
            for j in range(sy.shape[2]):
                y, xx = float(sy[k, i, j]), float(sx[k, i, j])
                y0, x0 = int(np.floor(y)), int(np.floor(xx))
                for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                    for xc, wx in ((x0, 1 - (xx - x0)), (x0 + 1, xx - x0)):
                        if 0 <= yy < h and 0 <= xc < w:
                            out[k, :, i, j] += wy * wx * x[k, :, yy, xc]
    return out


def test_bilinear_sample_matches_reference():
    rng = np.random.default_rng(0)
    x = _batch(n=3, c=2, h=5, w=6)
    sy = rng.uniform(-2.5, 7.5, (3, 4, 7)).astype(np.float32)
    sx = rng.uniform(-2.5, 8.5, (3, 4, 7)).astype(np.float32)
    sy[0, 0, :3] = [0, 4, 2]  # exact pixels
    sx[0, 0, :3] = [0, 5, 3]
    out = bilinear_sample(x, sy, sx)
    assert out.dtype == np.float32 and out.shape == (3, 2, 4, 7)
    np.testing.assert_allclose(out, _reference_bilinear(x, sy, sx), atol=1e-5)
    np.testing.assert_array_equal(out[0, :, 0, :3], x[0][:, [0, 4, 2], [0, 5, 3]])


def _reference_blur_1d(f, sigma):
    r = int(4 * sigma + 0.5)
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    g /= g.sum()
    n = len(f)
    out = np.zeros(n)
    for i in range(n):
        for k in range(-r, r + 1):
            j = i + k
            while j < 0 or j >= n:  # reflect: d c b a | a b c d | d c b a
                j = -j - 1 if j < 0 else 2 * n - 1 - j
            out[i] += g[k + r] * f[j]
    return out


@pytest.mark.parametrize("size,sigma", [(28, 4.0), (7, 3.0), (10, 0.5)])
def test_gaussian_blur_matrix_matches_reference(size, sigma):
    m = gaussian_blur_matrix(size, sigma, np.float64)
    np.testing.assert_allclose(m.sum(axis=1), 1, atol=1e-12)
    f = np.random.default_rng(0).standard_normal(size)
    np.testing.assert_allclose(m @ f, _reference_blur_1d(f, sigma), atol=1e-12)


def test_elastic():
    x = _batch(c=1, h=28, w=28)
    np.testing.assert_array_equal(_one({"type": "elastic", "alpha": 0.0})(x, np.random.default_rng(0)), x)
    out = _one({"type": "elastic", "alpha": 34.0, "sigma": 4.0})(x, np.random.default_rng(1))
    # reference: the same field drawn, blurred and scaled in float64, then a slow resampling
    rng = np.random.default_rng(1)
    field = rng.random((16, 2, 28, 28), dtype=np.float32).astype(np.float64) * 2 - 1
    b = gaussian_blur_matrix(28, 4.0, np.float64)
    field = b @ field @ b.T * 34.0
    grid = np.arange(28.0)
    ref = _reference_bilinear(x[:3], field[:3, 0] + grid[:, None], field[:3, 1] + grid)
    np.testing.assert_allclose(out[:3], ref, atol=1e-4)
    assert 0.1 < np.abs(field).max() < 10  # smooth, moderate displacements (pixels)


def test_elastic_with_probability_leaves_the_others_alone():
    x = _batch(c=1, h=28, w=28)
    out = _one({"type": "elastic", "alpha": 34.0, "p": 0.5})(x, np.random.default_rng(2))
    same = np.all(out == x, axis=(1, 2, 3))
    assert 0 < same.sum() < len(x)


def test_affine():
    x = _batch(h=9, w=9)
    ident = _one({"type": "affine", "degrees": 0, "scale": [1, 1]})
    np.testing.assert_allclose(ident(x, np.random.default_rng(0)), x, atol=1e-6)
    aug = _one({"type": "affine", "degrees": 30, "scale": [0.8, 1.25]})
    out = aug(x, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    theta = np.deg2rad(rng.uniform(-30, 30, 16))
    s = rng.uniform(0.8, 1.25, 16)
    c = 4.0
    dy, dx = np.meshgrid(np.arange(9) - c, np.arange(9) - c, indexing="ij")
    sy = np.stack([c + (np.cos(t) * dy - np.sin(t) * dx) / k for t, k in zip(theta, s)])
    sx = np.stack([c + (np.sin(t) * dy + np.cos(t) * dx) / k for t, k in zip(theta, s)])
    np.testing.assert_allclose(out, _reference_bilinear(x, sy, sx), atol=1e-4)
    np.testing.assert_allclose(out[:, :, 4, 4], x[:, :, 4, 4], atol=1e-5)  # the centre stays


# ----- pipeline and errors ---------------------------------------------------------------

def test_pipeline_chains_shapes_and_eval():
    pipe = make_augmentation(["hflip", {"type": "random_crop", "size": 24}, {"type": "cutout", "size": 4}])
    assert len(pipe) == 3 and pipe.output_shape((3, 32, 32)) == (3, 24, 24)
    x = _batch(h=32, w=32)
    assert pipe(x, np.random.default_rng(0)).shape == (16, 3, 24, 24)
    np.testing.assert_array_equal(pipe.for_eval()(x), x[:, :, 4:28, 4:28])
    assert len(make_augmentation(None)) == 0 and make_augmentation([])(x, None) is x


@pytest.mark.parametrize("specs,message", [
    ([{"type": "hflip", "prob": 0.5}], r"augment\[0\] \(hflip\): unknown option 'prob' \(options: p, alternate\)"),
    ([{"type": "hflip"}, {"type": "cutuot"}],
     r"augment\[1\] \(cutuot\): unknown augmentation type 'cutuot'; did you mean 'cutout'"),
    ([{"type": "random_crop"}], r"augment\[0\] \(random_crop\): missing a required argument: 'size'"),
    ([{"type": "random_crop", "size": 0}], r"expected an integer >= 1, received size=0"),
    ([{"type": "random_crop", "size": 8, "pad_mode": "wrap"}],
     r"expected one of zeros, reflect, received pad_mode='wrap'"),
    ([{"type": "hflip", "p": 1.5}], r"expected a number <= 1.0, received p=1.5"),
    ([{"type": "hflip", "p": 0.3, "alternate": True}], r"so p must be 0.5, received p=0.3"),
    ([{"type": "elastic", "sigma": 0}], r"expected a number > 0.0, received sigma=0"),
    ([{"type": "affine", "scale": 1.1}], r"expected a list of two numbers \[low, high\], received scale=1.1"),
    ([{"type": "affine", "scale": [1.2, 0.9]}], r"expected 0 < low <= high"),
    ([{"size": 3}], r"augment\[0\]: expected \{type: ..., ...\}"),
])
def test_errors_name_the_item(specs, message):
    with pytest.raises(ConfigError, match=message):
        make_augmentation(specs)

