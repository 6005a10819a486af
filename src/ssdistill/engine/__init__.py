"""The training engine: the method base class (``engine.module``), the teacher provider
(``engine.provider``), the run record (``engine.records``), trainer, schedule, run directories and CSV logs."""
