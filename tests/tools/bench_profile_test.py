"""tools.bench.profile: instructions are read from the compiled HLO, each profiled thunk
lands in one class, and the classes add up to the profiled step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tools.bench import profile


def test_op_classes():
  cls = profile.op_class
  lstm = "jit(<lambda>)/jvp(M)/OptimizedLSTMCell_0/dot_general"
  assert cls("dot.36", "dot", "f32[512,1024]{1,0}", lstm) == "matrix products"
  assert cls("ynn_fusion.8", "fusion/kCustom", "f32[64,512]{1,0}", lstm) == \
      "matrix products"
  conv = "jit(<lambda>)/jvp(SmallCNN)/Conv_1/conv_general_dilated"
  assert cls("ynn_fusion.14", "fusion/kCustom", "f32[64,4,4,64]{3,2,1,0}", conv) == \
      "convolutions"
  assert cls("convolution-base-dilated", "convolution", "f32[64,8,8,32]{3,2,1,0}",
             "jit(f)/transpose(jvp(SmallCNN))/Conv_1/conv_general_dilated") == \
      "convolutions"
  # The kernel gradients carry no op_name: known by their [O, 3, 3, I] shape.
  assert cls("ynn_fusion.1", "fusion/kCustom", "f32[32,3,3,64]{3,2,1,0}", "") == \
      "convolutions"
  assert cls("transpose_copy_fusion.3", "fusion/kLoop", "f32[32,8,8,64]{3,2,1,0}",
             "") == "layout copies and transposes"
  assert cls("copy.4", "copy", "f32[8,4]{0,1}", "") == "layout copies and transposes"
  assert cls("wrapped_scatter.1", "fusion/kLoop", "f32[23716,50]{1,0}",
             "jit(f)/transpose(jvp(SASRec))/item_embedding/add_any") == \
      "gathers and scatters"
  assert cls("ynn_fusion.31", "fusion/kCustom", "f32[128,1,50,50]{3,2,1,0}",
             "jit(f)/transpose(jvp(SASRec))/block_0/attention/reduce_sum") == \
      "element-wise and reductions"
  assert cls("concatenate.2", "concatenate", "f32[8]{0}", "") == "other"


def test_instructions_and_thunk_times_of_a_program():
  f = jax.jit(lambda a, b: jnp.tanh(a @ b).sum())
  a = jnp.ones((64, 64)) / 64
  compiled = f.lower(a, a).compile()
  names = profile.hlo_instructions(compiled.as_text())
  assert any(op.split("/")[0] in ("dot", "fusion") and "dot_general" in meta
             for op, _, meta in names.values()), names
  times = profile.thunk_times(lambda: jax.block_until_ready(compiled(a, a)), names, 2)
  assert times and set(times) <= set(names)
  assert all(ms >= 0 for ms in times.values())


def test_profile_of_the_digits_step_adds_up():
  row = profile.profile_workload("digits_cnn", calls=1, top=3)
  classes = row["classes_ms"]
  assert set(classes) == set(profile.CLASSES)
  np.testing.assert_allclose(sum(classes.values()), row["profiled_ms"], rtol=1e-9)
  # SmallCNN: two convolutions, their gradients, and a dense head.
  assert classes["convolutions"] > 0 and row["step_ms"] > 0
  ms = [o["ms"] for o in row["top_ops"]]
  assert len(ms) == 3 and ms == sorted(ms, reverse=True)
  table = profile.markdown({"rows": [row, {"workload": "sasrec", "status": "failed: x"}]})
  lines = table.splitlines()
  assert lines[2].startswith("| digits_cnn | ") and "failed: x" in lines[3]
  assert "Slowest instructions of `digits_cnn`" in table


def test_unknown_workload():
  with pytest.raises(KeyError, match="unknown workload"):
    profile.profile_workload("nope")


def test_fusions_are_classed_by_the_product_inside():
  """A YNNPACK fusion is named after its root (a ``reduce_sum``); the batched product
  in its computation makes it a matrix product."""
  text = """HloModule m

%fused_computation.31 (p0: f32[4,5,5], p1: f32[4,5,5]) -> f32[4,5] {
  %p0 = f32[4,5,5]{2,1,0} parameter(0)
  %p1 = f32[4,5,5]{2,1,0} parameter(1)
  %dot.37 = f32[4,5,5]{2,1,0} dot(%p0, %p1), lhs_batch_dims={0}
  ROOT %reduce_sum.2 = f32[4,5]{1,0} reduce(%dot.37, %c), dimensions={2}
}

%fused_computation.32 (p0: f32[4,5]) -> f32[4,5] {
  %p0 = f32[4,5]{1,0} parameter(0)
  ROOT %exp.1 = f32[4,5]{1,0} exponential(%p0)
}

ENTRY %main (a: f32[4,5,5]) -> f32[4,5] {
  %a = f32[4,5,5]{2,1,0} parameter(0)
  %ynn_fusion.31 = f32[4,5]{1,0} fusion(%a, %a), kind=kCustom, calls=%fused_computation.31, metadata={op_name="jit(f)/transpose(jvp(M))/attention/reduce_sum"}
  ROOT %loop_fusion = f32[4,5]{1,0} fusion(%ynn_fusion.31), kind=kLoop, calls=%fused_computation.32
}
"""
  fused = profile.fused_products(text)
  assert fused == {"ynn_fusion.31": "dot"}
  names = profile.hlo_instructions(text)
  assert profile.op_class("ynn_fusion.31", *names["ynn_fusion.31"],
                          fused.get("ynn_fusion.31")) == "matrix products"
  assert profile.op_class("ynn_fusion.31", *names["ynn_fusion.31"]) == \
      "element-wise and reductions"
  assert profile.op_class("loop_fusion", *names["loop_fusion"]) == \
      "element-wise and reductions"
