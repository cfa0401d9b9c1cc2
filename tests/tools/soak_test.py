"""tools.ops.soak on the loop's tiny recipe: SIGKILLed runs resume to the uninterrupted
result, and its comparison does catch a run that differs."""

import json
import os
import re
import subprocess
import sys

from jaxloss.training import train_and_evaluate
from tests.training import tiny_recipe
from tools.ops import soak

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_soak_a_kill(tmp_path):
  root = str(tmp_path / "soak")
  args = ["--config=tests/training/tiny_recipe.py", "--config.num_epochs=8"]
  cwd = os.getcwd()
  os.chdir(REPO)
  try:
    code = soak.main(["--kills", "1", "--seed", "0", "--root", root, "--", *args])
  finally:
    os.chdir(cwd)
  with open(os.path.join(root, "soak.json")) as f:
    out = json.load(f)
  assert code == 0 and out["ok"], out
  assert out["kills"] == 1 and len(out["kill_records"]) == 1
  assert all(r["exit"] == -9 for r in out["kill_records"] if r["killed"])
  assert out["final_step"] == out["total_steps"] == 40
  assert out["final_state_bitwise_equal"] and out["events_equal"]
  assert out["checkpoints_restored"] == len(out["soak_checkpoint_steps"]) >= 1
  assert re.search(r"\| final state bitwise equal +\| True \|", soak.format_report(out))

  # A run that differs (another seed) fails the same comparison.
  c = tiny_recipe.get_config()
  c.num_epochs, c.seed = 8, 1
  other = str(tmp_path / "other")
  train_and_evaluate(c, other, tiny_recipe.build)
  bad = soak.compare(os.path.join(root, "reference"), other)
  assert not bad["final_state_bitwise_equal"]
  assert bad["final_state_difference"].endswith(" differs")
  assert not bad["events_equal"] and "best_uar" in bad["summary_keys_differing"]


def test_soak_rejects_negative_kills():
  proc = subprocess.run([sys.executable, "-m", "tools.ops.soak", "--kills", "-1"],
                        cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 2 and "--kills must be >= 0, got -1" in proc.stderr
