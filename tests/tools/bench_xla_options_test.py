"""tools.bench.xla_options: both programs of a workload run from the same state, agree
within float32 rounding, and the table reports compile times, the difference and the
per-block ratio."""

import pytest

from tools.bench import xla_options


def test_digits_step_with_and_without_the_option():
  row = xla_options.measure("digits_cnn", steps=2, blocks=2, calls=1)
  assert set(row["compile_s"]) == set(row["step_ms"]) == {"defaults", "options"}
  assert all(v > 0 for v in row["compile_s"].values())
  # The suite compiles at optimisation level 0, where the two programs agree to float32
  # rounding (bit for bit at XLA's default level, docs/bench_compile.md).
  assert row["max_diff"] < 1e-5
  assert 0 < row["ratio_min"] <= row["ratio_median"] <= row["ratio_max"]
  line = xla_options.markdown([row]).splitlines()[2]
  assert line.startswith("| digits_cnn | ") and line.count("|") == 6


def test_bad_counts_are_refused():
  with pytest.raises(SystemExit):
    xla_options.main(["--steps", "0"])
