"""tools.bench.compile: each contender lowers the program it names (the overrides reach
the recipe's step), and the table reports the ratio to the bare step."""

from tools.bench import compile as bench_compile


def test_contenders_lower_different_programs():
  sizes = {}
  for contender in ("bare", "step", "step - monitors", "step - augmentation"):
    jitted, args = bench_compile._program("digits_cnn", contender)  # pylint: disable=protected-access
    sizes[contender] = jitted.lower(*args).as_text().count("\n")
  # The recipe's step holds the bare step's work and more; each override removes its part.
  assert sizes["step"] > sizes["bare"]
  assert sizes["step - monitors"] < sizes["step"]
  assert sizes["step - augmentation"] < sizes["step"]


def test_markdown_has_the_ratio_to_bare():
  rows = [{"workload": "digits_cnn", "contender": "bare", "lower_s": 0.2, "compile_s": 1.0,
           "total_s": 1.2, "hlo_lines": 600, "vs_bare": 1.0},
          {"workload": "digits_cnn", "contender": "step", "lower_s": 0.6, "compile_s": 3.6,
           "total_s": 4.2, "hlo_lines": 2469, "vs_bare": 3.5}]
  lines = bench_compile.markdown(rows).splitlines()
  assert lines[3] == "| digits_cnn | step | 0.60 | 3.60 | 4.20 | 3.50 | 2,469 |"
