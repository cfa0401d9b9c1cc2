"""Reports: the results tables, comparisons and failure-mode table of the docs pages
(``python -m tools.reports.<name>``)."""
