"""Operations: launching several local processes, the crash-resume soak, reading a run's findings
(``python -m tools.ops.<name>``)."""
