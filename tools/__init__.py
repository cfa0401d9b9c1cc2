"""Command-line tools, by kind: ``bench`` (benchmarks), ``ops`` (operations) and ``reports``
(the tables of the results pages). ``experiments`` never imports them."""
