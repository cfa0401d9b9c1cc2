"""Curriculum: values at and beside every boundary, validation, scaling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss.curriculum import Curriculum, Stage, constant, four_stage

TABLE = {  # stage -> (cap, mix, tau), the recipe's table
    "warm-up": (1.5, 0.0, 0.0),
    "margin": (3.0, 1.0, 0.5),
    "aggressive": (10.0, 1.0, 1.2),
    "cooldown": (3.0, 1.0, 0.8),
}


@pytest.mark.parametrize("num_epochs,steps_per_epoch", [(100, 8), (100, 1), (40, 5)])
def test_four_stage_values_at_and_beside_every_boundary(num_epochs, steps_per_epoch):
  cc = four_stage(num_epochs=num_epochs, learning_rate=0.1).compile(steps_per_epoch)
  expected_starts = [round(f * num_epochs * steps_per_epoch) for f in (0, .15, .40, .75)]
  assert cc.boundaries == tuple(expected_starts)
  assert cc.names == tuple(TABLE)
  for i, (name, start) in enumerate(zip(cc.names, cc.boundaries)):
    cap, mix, tau = TABLE[name]
    end = (cc.boundaries[i + 1] if i + 1 < len(cc.boundaries)
           else num_epochs * steps_per_epoch)
    for step in {start, start + 1, end - 1}:
      v = cc.host_values(step)
      assert (v["class_weight_cap"], v["sampler_mix"]) == (cap, mix), (name, step)
      np.testing.assert_allclose(v["tau"], tau, rtol=1e-6)
      assert cc.stage_of(step) == i
      assert int(cc.stage_index(jnp.int32(step))) == i
    if i > 0:  # the step just before a boundary belongs to the previous stage
      assert cc.stage_of(start - 1) == i - 1
      prev = TABLE[cc.names[i - 1]]
      np.testing.assert_allclose(cc.host_values(start - 1)["tau"], prev[2], rtol=1e-6)


def test_four_stage_learning_rate_milestones():
  cc = four_stage(num_epochs=100, learning_rate=0.1, lr_milestones=(0.85, 0.95),
                  lr_decay=0.1).compile(steps_per_epoch=8)
  lr = {s: cc.host_values(s)["learning_rate"] for s in (0, 599, 600, 679, 680, 759, 760,
                                                         799)}
  np.testing.assert_allclose(
      [lr[s] for s in sorted(lr)],
      [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_boundaries_scale_with_epochs():
  a = four_stage(num_epochs=100, learning_rate=1.0).compile(1).boundaries
  b = four_stage(num_epochs=200, learning_rate=1.0).compile(1).boundaries
  assert b == tuple(2 * x for x in a)


def test_values_are_traceable_and_jit_once():
  cc = four_stage(num_epochs=20, learning_rate=0.1).compile(1)
  f = jax.jit(lambda s: (cc.stage_index(s), cc.values(s)["tau"]))
  got = [tuple(map(float, f(jnp.int32(s)))) for s in range(20)]
  want = [(cc.stage_of(s), cc.host_values(s)["tau"]) for s in range(20)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert f._cache_size() == 1


def test_callable_values_get_time_since_stage_start_in_epochs():
  c = Curriculum([Stage("a", 0, {"x": 1.0}), Stage("b", 2, {"x": lambda t: 10 + t})])
  cc = c.compile(steps_per_epoch=4)
  np.testing.assert_allclose([cc.host_values(s)["x"] for s in (7, 8, 10, 12)],
                             [1.0, 10.0, 10.5, 11.0])


def test_unit_steps():
  c = Curriculum([Stage("a", 0, {"x": 0.0}), Stage("b", 3, {"x": 1.0})], unit="step")
  assert c.compile(steps_per_epoch=100).boundaries == (0, 3)


def test_constant():
  cc = constant(tau=0.5).compile(10)
  assert cc.names == ("constant",) and cc.boundaries == (0,)
  assert cc.host_values(10**6)["tau"] == 0.5


@pytest.mark.parametrize("stages,match", [
    ([], "at least one"),
    ([Stage("a", 1, {"x": 0.0})], r"stages\[0\].start must be 0"),
    ([Stage("a", 0, {"x": 0.0}), Stage("b", 5, {"x": 1.0}), Stage("c", 5, {"x": 2.0})],
     "strictly increasing"),
    ([Stage("a", 0, {"x": 0.0}), Stage("b", 5, {"x": 1.0}), Stage("c", 3, {"x": 2.0})],
     "strictly increasing"),
    ([Stage("a", 0, {"x": 0.0}), Stage("a", 5, {"x": 1.0})], "unique"),
    ([Stage("a", 0, {"x": 0.0}), Stage("b", 5, {"y": 1.0})], "same knobs"),
    ([Stage("a", 0, {"sampler_mix": "weighted"})], "unknown sampler 'weighted'"),
    ([Stage("a", 0, {"sampler_mix": 1.5})], r"sampler_mix .* must be in \[0, 1\]"),
])
def test_bad_curricula_raise(stages, match):
  with pytest.raises(ValueError, match=match):
    Curriculum(stages)


def test_bad_unit_and_rounding_raise():
  with pytest.raises(ValueError, match="unit must be one of"):
    Curriculum([Stage("a", 0, {"x": 0.0})], unit="epochs")
  c = Curriculum([Stage("a", 0, {"x": 0.0}), Stage("b", 0.1, {"x": 1.0})])
  with pytest.raises(ValueError, match="shorter than one step"):
    c.compile(steps_per_epoch=2)
  with pytest.raises(ValueError, match="steps_per_epoch"):
    c.compile(steps_per_epoch=0)
  with pytest.raises(ValueError, match="lr_milestones"):
    four_stage(learning_rate=0.1, lr_milestones=(0.5,))


def test_sampler_names_map_to_mix():
  c = Curriculum([Stage("a", 0, {"sampler_mix": "random"}),
                  Stage("b", 1, {"sampler_mix": "class_balanced"})])
  cc = c.compile(1)
  assert [cc.host_values(s)["sampler_mix"] for s in (0, 1)] == [0.0, 1.0]


def test_warmup_milestone_lr_by_hand():
  from jaxloss.curriculum import milestone_lr, warmup_milestone_lr
  lr = warmup_milestone_lr(0.1, warmup=5, milestones=(160, 180), decay=0.1)
  times = [0, 1, 4.5, 5, 100, 159.9, 160, 179.9, 180, 199]
  expected = [0.0, 0.02, 0.09, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
  np.testing.assert_allclose([float(lr(t)) for t in times], expected, rtol=1e-5)
  plain = milestone_lr(0.1, (160, 180), 0.1)
  no_warmup = warmup_milestone_lr(0.1, warmup=0, milestones=(160, 180), decay=0.1)
  assert [float(no_warmup(t)) for t in times] == [float(plain(t)) for t in times]
  with pytest.raises(ValueError, match="after the warm-up"):
    warmup_milestone_lr(0.1, warmup=5, milestones=(4,), decay=0.1)
  with pytest.raises(ValueError, match="warmup must be >= 0"):
    warmup_milestone_lr(0.1, warmup=-1, milestones=(), decay=0.1)


def test_deferred_reweighting_stages_and_one_lr_schedule():
  from jaxloss.curriculum import UNCAPPED, deferred_reweighting, warmup_milestone_lr
  cc = deferred_reweighting(num_epochs=200, learning_rate=0.1, warmup_epochs=5,
                            aug_strength=0.25).compile(steps_per_epoch=10)
  assert cc.names == ("erm", "drw") and cc.boundaries == (0, 1600)
  whole = warmup_milestone_lr(0.1, warmup=5, milestones=(160, 180), decay=0.1)
  for step in (0, 25, 50, 1599, 1600, 1601, 1799, 1800, 1999):
    v = cc.host_values(step)
    assert v["class_weight_cap"] == (1.0 if step < 1600 else UNCAPPED)
    assert (v["sampler_mix"], v["tau"], v["aug_strength"]) == (0.0, 0.0, 0.25)
    np.testing.assert_allclose(v["learning_rate"], float(whole(step / 10)), rtol=1e-5)
  with pytest.raises(ValueError, match="drw_start"):
    deferred_reweighting(num_epochs=10, learning_rate=0.1, drw_start=1.0)


def test_four_stage_warmup_and_per_stage_augmentation():
  cc = four_stage(num_epochs=100, learning_rate=0.1, warmup_epochs=5,
                  aug_strengths=(0.0, 0.5, 0.75, 0.0)).compile(steps_per_epoch=2)
  lrs = [cc.host_values(s)["learning_rate"] for s in (0, 5, 10, 29, 30)]
  np.testing.assert_allclose(lrs, [0.0, 0.05, 0.1, 0.1, 0.1], rtol=1e-6)
  assert [cc.host_values(b)["aug_strength"] for b in cc.boundaries] == [0.0, 0.5, 0.75,
                                                                        0.0]
  # Without the new arguments the curriculum is the recipe's, unchanged.
  a = four_stage(num_epochs=100, learning_rate=0.1).compile(2)
  b = four_stage(num_epochs=100, learning_rate=0.1, warmup_epochs=0.0,
                 aug_strengths=None).compile(2)
  assert all(a.host_values(s) == b.host_values(s) for s in range(0, 200, 7))
  with pytest.raises(ValueError, match="warmup_epochs"):
    four_stage(num_epochs=10, learning_rate=0.1, warmup_epochs=2)  # stage is 1.5
  with pytest.raises(ValueError, match="aug_strengths"):
    four_stage(num_epochs=10, learning_rate=0.1, aug_strengths=(1.0,))
