"""``FILE.py:A,B`` variant strings of the configs with two choices (a method and a size or
a task), e.g. ``cifar10_lt.py:la,cpu`` or ``vsfc.py:erm,topic``."""


def parse_pair(arg, *, firsts, seconds, names=("method", "size")):
  """``"A[,B]"`` -> ``(A, B)``, with ``firsts[0]`` and ``seconds[0]`` as the defaults.

  Raises:
    ValueError: a part not among its choices (the message names the part and lists
      the choices).

  Examples:
    >>> parse_pair("la,cpu", firsts=("erm", "la"), seconds=("full", "cpu"))
    ('la', 'cpu')
    >>> parse_pair(None, firsts=("erm", "la"), seconds=("full", "cpu"))
    ('erm', 'full')
  """
  first, _, second = (arg or firsts[0]).partition(",")
  second = second or seconds[0]
  for name, value, choices in ((names[0], first, firsts), (names[1], second, seconds)):
    if value not in choices:
      raise ValueError(f"{name} must be one of {tuple(choices)} (variant "
                       f"{names[0].upper()}[,{names[1].upper()}] or 'smoke'), got "
                       f"{value!r}")
  return first, second
