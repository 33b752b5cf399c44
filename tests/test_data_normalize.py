"""Normalisation: each kind against a plain float64 reference, float32 output, state round trip."""

import numpy as np
import pytest

from nntrain.data.normalize import KINDS, Normalizer, normalize_spec
from nntrain.errors import CheckpointError, ConfigError
from nntrain.fileio import load_npz, save_npz


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (300, 3, 6, 5), dtype=np.uint8)
    base[:, 1] //= 4  # channels with different statistics
    return base


def test_per_channel_matches_reference(images):
    norm = Normalizer.fit("per_channel", images)
    out = norm.apply(images[:50])
    x = images.astype(np.float64)
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), keepdims=True)
    assert out.dtype == np.float32 and out.shape == (50, 3, 6, 5)
    np.testing.assert_allclose(out, (x[:50] - mean) / std, rtol=1e-5, atol=1e-5)
    full = norm.apply(images).astype(np.float64)
    np.testing.assert_allclose(full.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(full.std(axis=(0, 2, 3)), 1, atol=1e-5)


def test_per_pixel_mean_scale_none(images):
    x = images.astype(np.float64)
    out = Normalizer.fit("per_pixel_mean", images).apply(images[:10])
    np.testing.assert_allclose(out, x[:10] - x.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(Normalizer.fit("scale", images).apply(images[:10]), x[:10] / 255, rtol=1e-6)
    none = Normalizer.fit("none", images).apply(images[:10])
    assert none.dtype == np.float32
    np.testing.assert_array_equal(none, x[:10])


@pytest.mark.parametrize("kind", KINDS)
def test_output_is_new_float32_and_input_untouched(images, kind):
    norm = Normalizer.fit({"type": kind, "samples": 300} if kind in ("zca", "pca") else kind, images)
    batch = images[:7].copy()
    for x in (batch, batch.astype(np.float32)):
        before = x.copy()
        out = norm.apply(x)
        assert out.dtype == np.float32 and out.shape == x.shape
        assert not np.shares_memory(out, x)
        np.testing.assert_array_equal(x, before)


def _correlated(n=4000, seed=1):
    """uint8-range images (1, 2, 2) whose pixels are strongly correlated."""
    rng = np.random.default_rng(seed)
    mix = np.array([[1.0, 0.8, 0.2, 0.1], [0, 0.6, 0.5, 0.3], [0, 0, 0.7, 0.2], [0, 0, 0, 0.4]])
    z = rng.standard_normal((n, 4)) @ mix
    return np.clip(z * 30 + 128, 0, 255).round().astype(np.uint8).reshape(n, 1, 2, 2)


@pytest.mark.parametrize("kind", ["zca", "pca"])
def test_whitening_gives_identity_covariance(kind):
    x = _correlated()
    norm = Normalizer.fit({"type": kind, "epsilon": 1e-9, "samples": 4000}, x)
    z = norm.apply(x).reshape(len(x), -1).astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(4), atol=1e-3)


def test_zca_is_symmetric_and_pca_orders_components():
    x = _correlated()
    zca = Normalizer.fit({"type": "zca", "epsilon": 1e-9, "samples": 4000}, x)
    np.testing.assert_allclose(zca.matrix, zca.matrix.T, atol=1e-6)
    # ZCA is the whitening closest to the identity: each output stays correlated with its own pixel
    z = zca.apply(x).reshape(len(x), -1)
    u = x.reshape(len(x), -1).astype(np.float64)
    corr = [np.corrcoef(z[:, i], u[:, i])[0, 1] for i in range(4)]
    assert min(corr) > 0.3
    pca = Normalizer.fit({"type": "pca", "epsilon": 0.01, "samples": 4000}, x)
    var = pca.apply(x).reshape(len(x), -1).var(axis=0)
    assert np.all(np.diff(var) <= 1e-6)  # decreasing: with epsilon, bigger components stay closer to 1


def test_whitening_epsilon_shrinks_weak_directions():
    x = _correlated()
    weak = Normalizer.fit({"type": "zca", "epsilon": 1.0, "samples": 4000}, x).apply(x)
    strong = Normalizer.fit({"type": "zca", "epsilon": 1e-9, "samples": 4000}, x).apply(x)
    assert weak.var() < strong.var()


def test_whitening_subsample_is_fixed_by_seed():
    x = _correlated(2000)
    a = Normalizer.fit({"type": "zca", "samples": 500}, x, seed=3)
    b = Normalizer.fit({"type": "zca", "samples": 500}, x, seed=3)
    c = Normalizer.fit({"type": "zca", "samples": 500}, x, seed=4)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert not np.array_equal(a.matrix, c.matrix)


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trip_through_npz(images, kind, tmp_path):
    norm = Normalizer.fit({"type": kind, "samples": 300} if kind in ("zca", "pca") else kind, images)
    state = norm.state()
    assert state["kind"].ndim == 0 and state["kind"].dtype.kind == "U"
    save_npz(tmp_path / "n.npz", {f"normalizer/{k}": val for k, val in state.items()})
    loaded = {k.split("/", 1)[1]: val for k, val in load_npz(tmp_path / "n.npz").items()}
    again = Normalizer.from_state(loaded)
    assert again.kind == kind and again.shape == norm.shape
    np.testing.assert_array_equal(again.apply(images[:9]), norm.apply(images[:9]))


def test_from_state_errors():
    with pytest.raises(CheckpointError, match="malformed"):
        Normalizer.from_state({"shape": np.array([1, 2, 2])})
    with pytest.raises(CheckpointError, match="unknown kind 'whiten'"):
        Normalizer.from_state({"kind": np.array("whiten"), "shape": np.array([1, 2, 2])})
    with pytest.raises(CheckpointError, match=r"\(per_channel\) lacks shift"):
        Normalizer.from_state({"kind": np.array("per_channel"), "shape": np.array([1, 2, 2]),
                               "scale": np.ones((1, 1, 1))})


def test_constant_channel_is_only_centred():
    x = np.full((10, 2, 3, 3), 7, np.uint8)
    x[:, 1] = np.arange(10)[:, None, None]
    out = Normalizer.fit("per_channel", x).apply(x)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 0], 0)


def test_apply_checks_the_shape(images):
    norm = Normalizer.fit("per_pixel_mean", images)
    with pytest.raises(ConfigError, match=r"fitted on images of shape \(3, 6, 5\)"):
        norm.apply(np.zeros((2, 3, 5, 5), np.uint8))


def test_spec_validation():
    assert normalize_spec("scale") == {"type": "scale"}
    assert normalize_spec({"type": "pca", "samples": 20}) == {"type": "pca", "epsilon": 0.01, "samples": 20}
    with pytest.raises(ConfigError, match=r"received 'zac'; did you mean 'zca'"):
        normalize_spec("zac")
    with pytest.raises(ConfigError, match=r"data.normalize.sample: unknown option for zca; did you mean 'samples'"):
        normalize_spec({"type": "zca", "sample": 3})
    with pytest.raises(ConfigError, match=r"positive integer, received data.normalize.samples=0"):
        normalize_spec({"type": "zca", "samples": 0})
    with pytest.raises(ConfigError, match="fit a normalisation on an empty"):
        Normalizer.fit("per_channel", np.zeros((0, 1, 2, 2), np.uint8))
