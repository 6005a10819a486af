"""RoB, "replace one branch" (docs/methods/rob.md; no official code is public, the decisions box says what we chose): a
joint-embedding self-supervised method keeps its views and its loss, but its target branch is the frozen teacher.

One method (``method.name: rob``), one base per joint-embedding method it wraps (``method.base``), each a small class
sharing one interface (``base.RoBBase``: the student's head, its outputs over the targets, the loss, what it prepares):

* ``config.py``: ``RoBConfig``, the method's settings;
* ``targets.py``: the teacher's targets (its logits, its own SSL head, or its normalised embedding times fixed columns)
  and the columns and head they read;
* ``dino.py`` (6.3), ``regression.py`` (6.4, BYOL / SimSiam heads), ``msn.py`` (6.5): the bases;
* ``method.py``: ``RoB``, the method module: views, the teacher need, the preparation and the training step every
  base shares (teacher targets on the global crops, the student on every crop, the base's loss); the registry's
  ``rob``.
"""
