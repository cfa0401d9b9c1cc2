"""tools.bench.conv_grad: the candidate kernel gradients equal XLA's (the tool refuses to
time one that does not), the profile names each kind of op of the gradient, and the
ratio rows carry page faults and temporaries for each host-memory mode."""

import numpy as np
import pytest

from tools.bench import conv_grad
from tools.bench.encoder import set_host_memory


def test_candidate_kernel_gradients_equal_xla():
  rows = conv_grad.kernel_gradient_candidates(batch=2, repeats=1)
  assert [r["shape"] for r in rows] == ["2×32×32, 3→16", "2×32×32, 16→16",
                                        "2×16×16, 32→32", "2×8×8, 64→64"]
  for r in rows:
    for name in conv_grad.CANDIDATES:
      # float32 sums of 2·H·W ≤ 2,048 products of O(1) values: ~1e-7 of the largest.
      assert r[name]["rel_err"] < 1e-5, (r["shape"], name, r[name])
      assert r[name]["ms"] > 0


def test_op_kinds():
  kind = conv_grad._op_kind  # pylint: disable=protected-access
  fwd = "jit(loss)/jvp(CifarResNet)/stage1_block1/conv1/conv_general_dilated"
  bwd = "jit(loss)/transpose(jvp(CifarResNet))/stage2_block1/conv1/conv_general_dilated"
  assert kind("conv_general_dilated.21", "convolution", "f32[128,32,32,16]{3,2,1,0}",
              fwd) == "conv forward (Eigen)"
  assert kind("ynn_fusion.44", "fusion/kCustom", "f32[128,16,16,32]{3,2,1,0}",
              fwd) == "conv forward (YNNPACK)"
  assert kind("convolution-base-dilated.1", "convolution", "f32[128,32,32,16]{3,2,1,0}",
              bwd) == "conv input gradient, stride 2 (Eigen)"
  assert kind("ynn_fusion.8", "fusion/kCustom", "f32[16,3,3,16]{3,2,1,0}",
              "") == "conv kernel gradient (YNNPACK)"
  assert kind("transpose_copy_fusion.11", "fusion/kLoop", "f32[16,32,32,128]{3,2,1,0}",
              "") == "layout transposes"
  # A batch-norm reduction is a YNNPACK fusion too, but not a convolution.
  assert kind("ynn_fusion.50", "fusion/kCustom", "f32[16]{0}",
              "jit(loss)/jvp(CifarResNet)/bn/reduce_sum") is None


def test_gradient_profile_accounts_for_the_convolutions():
  p = conv_grad.gradient_profile(depth=8, batch=2, calls=2)
  if "kinds_ms" not in p:  # a jax without the perfetto trace: the tool says so
    assert p["status"].startswith("failed")
    return
  kinds = p["kinds_ms"]
  assert any(k.startswith("conv forward") for k in kinds)
  assert any(k.startswith("conv kernel gradient") for k in kinds)
  assert any(k.startswith("conv input gradient") for k in kinds)
  np.testing.assert_allclose(sum(kinds.values()), p["total_ms"], rtol=1e-9)


def test_gradient_ratio_reports_page_faults_and_temporaries_by_host_memory_mode():
  r = conv_grad.gradient_ratio(depth=8, batch=2, repeats=1)
  assert r["gradient_temp_mib"] > r["forward_temp_mib"] > 0
  assert r["gradient_page_faults"] >= 0 and r["ratio_min"] <= r["ratio_median"]
  table = conv_grad.format_tables({"runs": [
      {"header": {"threads": 1, "host_memory": "reuse"}, "ratios": [r]},
      {"header": {"threads": 1, "host_memory": "system", "error": "worker exited with 1"}}]})
  assert "| 1 | reuse | ResNet-8 (2) |" in table
  assert "| 1 | system | worker exited with 1 |" in table


def test_host_memory_mode_is_checked():
  with pytest.raises(ValueError, match="host memory mode"):
    set_host_memory("pooled")
  assert set_host_memory("system") is False
