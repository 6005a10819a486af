"""The run, one floor above the methods it runs: ``assemble`` (inputs checked, students, teacher signals, the method
module), ``train`` (Lightning, then the evaluation and the record), ``evaluation`` (every model side by side, at the end
of training or later from the run's folder), ``record`` (results.json) and ``load`` (a run read back from its folder)."""
