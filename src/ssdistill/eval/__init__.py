"""Evaluation: k-NN, linear and few-shot probes, clustering, alignment with the teacher, the suite that runs them
side by side, the k-NN monitor and result tables. Import from the modules."""
