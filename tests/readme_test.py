"""The README's loss examples run as written and print what they claim."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_loss_examples_run():
  text = README.read_text()
  section = text[text.index("### Using them"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, "README.md", "exec"), {})  # pylint: disable=exec-used
  # The reranking sanity value the README states: ln 50 = 3.912.
  assert out.getvalue().strip().startswith("3.912")
