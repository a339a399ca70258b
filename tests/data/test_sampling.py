import numpy as np

from hspreid.data.sampling import (IdentityBatchSampler, consecutive_clips, evenly_spaced_clip,
                                   restricted_random_clip)


def test_restricted_random_clip_one_frame_per_chunk():
    rng = np.random.default_rng(0)
    for length in (4, 9, 33, 100):
        pos = restricted_random_clip(length, 4, rng)
        assert len(pos) == 4 and np.all(np.diff(pos) > 0)
        for i, p in enumerate(pos):  # frame i comes from the i-th quarter of the tracklet
            assert np.floor(i * length / 4) <= p < max(np.floor((i + 1) * length / 4), np.floor(i * length / 4) + 1)


def test_restricted_random_clip_short_tracklet_repeats_frames():
    pos = restricted_random_clip(2, 5, np.random.default_rng(1))
    assert len(pos) == 5 and set(pos) <= {0, 1} and np.all(np.diff(pos) >= 0)


def test_evenly_and_consecutive():
    assert list(evenly_spaced_clip(10, 5)) == [0, 2, 4, 6, 8]
    assert list(evenly_spaced_clip(3, 5)) == [0, 1, 2, 2, 2]
    clips = consecutive_clips(70, 32)
    assert [len(c) for c in clips] == [32, 32, 6] and np.array_equal(np.concatenate(clips), np.arange(70))


def test_identity_batch_sampler_p_by_k_and_deterministic():
    labels = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    sampler = IdentityBatchSampler(labels, num_ids=4, num_instances=3, seed=5)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        items = [i for i, _ in batch]
        assert len(items) == 12
        ids, counts = np.unique(labels[items], return_counts=True)
        assert len(ids) == 4 and set(counts) == {3}
    assert batches == list(sampler)  # same epoch, same batches
    sampler.set_epoch(1)
    assert batches != list(sampler)
