"""tools.bench.compile: each contender lowers the program it names (the overrides reach
the recipe's step), and the table reports the ratio to the bare step."""

import json

import pytest

from tools.bench import compile as bench_compile
from tools.bench import vs_torch


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


def test_text_workloads_compare_with_the_bare_step_with_dropout():
  # Dropout is the model's, not the loop's: the text workloads get the bare + dropout
  # contender, and the overrides their configs lack (or already have) are left out.
  assert bench_compile.applies("joint_nlu", "bare + dropout")
  assert not bench_compile.applies("digits_cnn", "bare + dropout")
  assert not bench_compile.applies("joint_nlu", "step - augmentation")  # no such field
  assert not bench_compile.applies("bilstm", "step - augmentation")  # already "none"
  assert bench_compile.applies("bilstm", "step - curriculum")
  plain, _ = bench_compile._program("bilstm", "bare")  # pylint: disable=protected-access
  dropout, args = bench_compile._program("bilstm", "bare + dropout")  # pylint: disable=protected-access
  assert plain is not dropout
  assert "rng_bit_generator" in dropout.lower(*args).as_text() or "threefry" in (
      dropout.lower(*args).as_text())


def test_run_divides_by_the_bare_step_with_dropout(monkeypatch):
  # Fake workers: each contender's lower + compile time is fixed; the text workload's
  # rows are divided by bare + dropout (2.0 s), the image workload's by bare (1.0 s).
  totals = {"bare": 1.0, "bare + dropout": 2.0, "step": 3.0, "step - monitors": 2.5,
            "step - curriculum": 2.8, "step - augmentation": 2.2,
            "step, XLA defaults": 3.5, "bare, step's XLA options": 0.8}

  class Done:
    returncode = 0
    stderr = ""

  def fake(cmd, **kwargs):
    del kwargs
    w, c, out = (cmd[cmd.index(flag) + 1] for flag in ("--workloads", "--contender",
                                                       "--json"))
    with open(out, "w") as f:
      json.dump({"workload": w, "contender": c, "lower_s": 0.25 * totals[c],
                 "compile_s": 0.75 * totals[c], "hlo_lines": 10}, f)
    return Done()

  monkeypatch.setattr(bench_compile.subprocess, "run", fake)
  rows = bench_compile.run(["digits_cnn", "bilstm"], repeats=1, log=lambda m: None)
  got = {(r["workload"], r["contender"]): (r["vs_bare"], r["ratio_to"]) for r in rows}
  assert got[("digits_cnn", "step")] == (3.0, "bare")
  assert ("digits_cnn", "bare + dropout") not in got
  assert got[("bilstm", "step")] == (1.5, "bare + dropout")
  assert got[("bilstm", "bare")] == (0.5, "bare + dropout")
  assert ("bilstm", "step - augmentation") not in got
  # The image recipes have XLA options of their own: their step with XLA's defaults
  # and the bare step with their options are rows too; the text BiLSTM's are not.
  assert got[("digits_cnn", "step, XLA defaults")] == (3.5, "bare")
  assert got[("digits_cnn", "bare, step's XLA options")] == (0.8, "bare")
  assert ("bilstm", "step, XLA defaults") not in got


def test_xla_options_contenders_compile_the_options_in(monkeypatch):
  # With an option XLA does not know in the recipe's config, the bare step compiled
  # "with the step's XLA options" fails on it: the options reach its compilation.
  assert bench_compile.applies("digits_cnn", "step, XLA defaults")
  assert bench_compile.applies("digits_cnn", "bare, step's XLA options")
  assert not bench_compile.applies("joint_nlu", "bare, step's XLA options")
  original = vs_torch.workload_config

  def with_bad_option(name):
    config = original(name)
    config.cpu_compiler_options = {"xla_no_such_option": True}
    return config
  monkeypatch.setattr(vs_torch, "workload_config", with_bad_option)
  jitted, args = bench_compile._program("digits_cnn", "bare, step's XLA options")  # pylint: disable=protected-access
  with pytest.raises(Exception, match="xla_no_such_option"):
    jitted.lower(*args).compile()
  jitted, args = bench_compile._program("digits_cnn", "bare")  # pylint: disable=protected-access
  jitted.lower(*args).compile()  # the plain bare step has XLA's defaults
