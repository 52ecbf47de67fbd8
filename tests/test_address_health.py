"""Address-health statistics: values on cases known by construction."""

import math

import numpy as np
import pytest

from vma_tf import address_health as ah


def test_uniform_q_has_full_entropy_and_no_information():
    q = np.full((5, 8), 1 / 8)
    s = ah.address_statistics(q)
    assert s["H_q"] == pytest.approx(math.log(8))
    assert s["H_mean_q"] == pytest.approx(math.log(8))
    assert s["I_xa"] == pytest.approx(0.0, abs=1e-12)
    assert s["memory_size"] == 8
    assert ah.collapsed(s)


def test_one_hot_on_distinct_slots_is_log_n_information():
    n, m = 4, 10
    q = np.zeros((n, m))
    q[np.arange(n), [0, 3, 5, 7]] = 1.0
    own = q.copy()
    s = ah.address_statistics(q, own)
    assert s["H_q"] == 0.0
    assert s["I_xa"] == pytest.approx(math.log(n))
    assert s["slots_as_mode"] == 4
    assert s["top_slot_share"] == pytest.approx(0.25)
    assert s["q_own"] == pytest.approx(1.0)
    assert not ah.collapsed(s)


def test_one_slot_for_every_target_is_collapse():
    q = np.zeros((6, 5))
    q[:, 2] = 0.9
    q[:, [0, 1, 3, 4]] = 0.025
    s = ah.address_statistics(q)
    assert s["slots_as_mode"] == 1 and s["top_slot_share"] == 1.0
    assert s["I_xa"] == pytest.approx(0.0, abs=1e-12)
    assert ah.collapsed(s)
    line = ah.collapse_warning("valid", 300, s)
    assert "step 300" in line and "\n" not in line


def test_hand_made_q_values():
    # Two targets, three slots; every number by hand.
    q = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    own = np.array([[1, 0, 0], [0, 0, 1]], float)
    s = ah.address_statistics(q, own)
    assert s["H_q"] == pytest.approx(math.log(2) / 2)
    mean = np.array([0.25, 0.25, 0.5])
    assert s["H_mean_q"] == pytest.approx(-(mean * np.log(mean)).sum())
    assert s["I_xa"] == pytest.approx(s["H_mean_q"] - s["H_q"])
    assert s["q_own"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["slots_as_mode"] == 2  # argmax of [0.5, 0.5, 0] is slot 0.


def test_episodic_batches_are_averaged_learned_memory_pooled():
    a = np.eye(3)[[0, 1]]  # two targets on distinct slots: I = log 2
    b = np.eye(3)[[2, 2]]  # two targets on one slot: I = 0
    per_batch = ah.AddressHealth(shared_memory=False)
    per_batch.update(a)
    per_batch.update(b)
    assert per_batch.result()["I_xa"] == pytest.approx(math.log(2) / 2)
    pooled = ah.AddressHealth(shared_memory=True)
    pooled.update(a)
    pooled.update(b)
    mean = np.array([0.25, 0.25, 0.5])
    assert pooled.result()["I_xa"] == pytest.approx(-(mean * np.log(mean)).sum())
    assert ah.AddressHealth(shared_memory=True).result() == {}


def test_own_mask_from_recall_slots_and_episode_labels():
    mask = ah.own_mask({"target_slot": np.array([2, 0])}, 3)
    np.testing.assert_array_equal(mask, [[0, 0, 1], [1, 0, 0]])
    mask = ah.own_mask(
        {"x_label": np.array([7, 9]), "memory_label": np.array([9, 7, 7])}, 3
    )
    np.testing.assert_array_equal(mask, [[0, 1, 1], [1, 0, 0]])
    assert ah.own_mask({"x": np.zeros((2, 3))}, 3) is None


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="q must be"):
        ah.address_statistics(np.ones(3))
