"""BatchLoader: coverage of an epoch, determinism and mid-epoch resume, the prefetch thread."""

import threading
import time

import numpy as np
import pytest

from nntrain.data import BatchLoader, Normalizer, Split, make_augmentation


def _split(n=103):
    """Image n is filled with the value n % 256 and labelled n % 7: a batch shows what it holds."""
    x = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None], (n, 1, 4, 4)).copy()
    return Split(x, (np.arange(n) % 7).astype(np.int64))


NONE = Normalizer("none", (1, 4, 4))


def _ids(batches):
    return [x[:, 0, 0, 0].astype(int).tolist() for x, _ in batches]


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "nntrain-prefetch"]


def _wait_no_prefetch_thread():
    for _ in range(100):
        if not _prefetch_threads():
            return True
        time.sleep(0.01)
    return False


def test_length_and_sizes():
    split = _split(103)
    assert len(BatchLoader(split, 10, normalizer=NONE)) == 11
    assert len(BatchLoader(split, 10, normalizer=NONE, drop_last=True)) == 10
    sizes = [len(y) for _, y in BatchLoader(split, 10, normalizer=NONE).epoch(0)]
    assert sizes == [10] * 10 + [3]
    assert BatchLoader(split, 10, normalizer=NONE, drop_last=True).num_samples == 100


@pytest.mark.parametrize("prefetch", [True, False])
def test_every_sample_once_per_epoch_labels_match(prefetch):
    split = _split(103)
    loader = BatchLoader(split, 16, normalizer=NONE, seed=3, prefetch=prefetch)
    epochs = []
    for e in range(2):
        seen = []
        for x, y in loader.epoch(e):
            assert x.dtype == np.float32 and x.flags.c_contiguous and y.dtype == np.int64
            ids = x[:, 0, 0, 0].astype(int)
            np.testing.assert_array_equal(y, ids % 7)  # labels travel with their images
            seen += ids.tolist()
        assert sorted(seen) == list(range(103))
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # a new order each epoch
    assert seen != list(range(103))


def test_order_is_a_function_of_seed_and_epoch():
    split = _split()
    a = _ids(BatchLoader(split, 16, normalizer=NONE, seed=3).epoch(4))
    b = _ids(BatchLoader(split, 16, normalizer=NONE, seed=3, prefetch=False).epoch(4))
    c = _ids(BatchLoader(split, 16, normalizer=NONE, seed=4).epoch(4))
    assert a == b and a != c
    perm = np.random.default_rng([3, 4]).permutation(103)
    assert sum(a, []) == perm.tolist()


def test_resume_mid_epoch_gives_the_same_batches_with_augmentation():
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (90, 3, 8, 8), dtype=np.uint8), rng.integers(0, 10, 90))
    norm = Normalizer.fit("per_channel", split.x)
    aug = make_augmentation(["hflip", {"type": "random_crop", "size": 8, "padding": 2}, {"type": "cutout", "size": 3}])
    full = list(BatchLoader(split, 16, normalizer=norm, augment=aug, seed=11).epoch(2))
    resumed = list(BatchLoader(split, 16, normalizer=norm, augment=aug, seed=11).epoch(2, start_batch=3))
    assert len(resumed) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # and the augmentation of batch b is exactly default_rng([seed, epoch, b]) applied to the normalised batch
    idx = np.random.default_rng([11, 2]).permutation(90)[3 * 16:4 * 16]
    expected = aug(norm.apply(split.x[idx]), np.random.default_rng([11, 2, 3]))
    np.testing.assert_array_equal(full[3][0], expected)


def test_alternating_flip_gets_the_sample_indices_and_epoch():
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (50, 1, 2, 3), dtype=np.uint8), np.zeros(50, np.int64))
    aug = make_augmentation([{"type": "hflip", "alternate": True}])
    loader = BatchLoader(split, 16, normalizer=Normalizer("none", (1, 2, 3)), augment=aug, seed=5)
    coins = aug.augmentations[0].coins(5, 50)
    for epoch in range(3):
        order = loader.order(epoch)
        x = np.concatenate([xb for xb, _ in loader.epoch(epoch)])
        raw = split.x[order].astype(np.float32)
        expected = coins[order] ^ bool(epoch % 2)
        np.testing.assert_array_equal(x[expected], raw[expected][..., ::-1])
        np.testing.assert_array_equal(x[~expected], raw[~expected])


def test_no_shuffle_keeps_file_order_and_applies_eval_transform():
    split = _split(20)
    loader = BatchLoader(split, 8, normalizer=NONE, shuffle=False)
    assert sum(_ids(loader.epoch(0)), []) == list(range(20))
    assert _ids(loader.epoch(0)) == _ids(loader.epoch(5))
    x = np.random.default_rng(0).integers(0, 256, (5, 1, 6, 6), dtype=np.uint8)
    pipe = make_augmentation([{"type": "random_crop", "size": 4}])
    ev = BatchLoader(Split(x, np.zeros(5, np.int64)), 5, normalizer=Normalizer("none", (1, 6, 6)),
                     augment=pipe.for_eval(), shuffle=False)
    (xb, _), = list(ev.epoch(0))
    np.testing.assert_array_equal(xb, x[:, :, 1:5, 1:5])


def test_split_data_is_never_modified():
    split = _split(40)
    before = split.x.copy()
    aug = make_augmentation([{"type": "cutout", "size": 4}, "hflip"])
    for _ in BatchLoader(split, 8, normalizer=NONE, augment=aug).epoch(0):
        pass
    np.testing.assert_array_equal(split.x, before)


def test_prefetch_thread_stops_when_abandoned_closed_or_done():
    split = _split(200)
    loader = BatchLoader(split, 4, normalizer=NONE)
    for i, _ in enumerate(loader.epoch(0)):
        if i == 2:
            break  # the generator is dropped: its finally stops the thread
    assert _wait_no_prefetch_thread()
    gen = loader.epoch(1)
    next(gen)
    assert _prefetch_threads()
    gen.close()
    assert not _prefetch_threads()  # close() joins
    list(loader.epoch(2))
    assert _wait_no_prefetch_thread()


class _Failing:
    """A normaliser that fails on its third batch."""

    def __init__(self):
        self.calls = 0

    def apply(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("disk on fire")
        return x.astype(np.float32)


@pytest.mark.parametrize("prefetch", [True, False])
def test_errors_reach_the_consumer(prefetch):
    got = []
    with pytest.raises(RuntimeError, match="disk on fire"):
        for x, _ in BatchLoader(_split(50), 4, normalizer=_Failing(), prefetch=prefetch).epoch(0):
            got.append(x)
    assert len(got) == 2
    assert _wait_no_prefetch_thread()


def test_argument_validation():
    from nntrain.errors import ConfigError

    with pytest.raises(ConfigError, match="positive integer, received batch_size=0"):
        BatchLoader(_split(), 0, normalizer=NONE)
    loader = BatchLoader(_split(10), 4, normalizer=NONE)
    with pytest.raises(ConfigError, match=r"integer <= 3, received start_batch=4"):
        loader.epoch(0, start_batch=4)
    assert list(loader.epoch(0, start_batch=3)) == []
