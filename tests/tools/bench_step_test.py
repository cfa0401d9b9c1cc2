"""tools.bench.step runs end to end on a tiny budget and reports a sane comparison."""

from tools.bench import step as bench_step


def test_bench_step_runs_and_formats():
  rows = bench_step.run(["main"], steps=2, repeats=2)
  (row,) = rows
  assert row["variant"] == "main" and row["steps"] == 2 and row["repeats"] == 2
  assert row["off_ms"] > 0 and row["on_ms"] > 0
  assert row["ratio"] == row["on_ms"] / row["off_ms"]
  table = bench_step.format_table(rows)
  assert "on/off" in table and ("met" in table or "MISSED" in table)
