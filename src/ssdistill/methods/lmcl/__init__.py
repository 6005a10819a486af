"""L-MCL, Layer-wise Mutual Contrastive Learning (docs/methods/mcl.md, the TPAMI 2023 extension of MCL; official code
github.com/winycg/L-MCL, CIFAR, supervised): MCL's four terms exchanged between every stage of every member.

Each member gets an auxiliary branch on every stage but its last (``branch: copy``: a freshly initialised copy of its
remaining stages and head, as the official code builds them; ``light``: a small conv head, for students where a copy
is not meaningful), so member i has S_i stage features f_ik, the last its own pooled feature. Per (member, stage):
an embedding head (Linear-ReLU-Linear to 128, L2-normalised), a classifier (supervised) and a projection of the
weighting network. The loss (``losses/layerwise.py``) contrasts every stage of a member with every stage of every
other member, each anchor weighted by ω = sigmoid(cos(P f, P f)); supervised runs add every stage's cross-entropy,
the aggregator (softmax over the stages, from their concatenated features, mixing the stage logits) with its
cross-entropy, and the final head's KD towards every member's aggregated logits.

The weighting network is trained only by the meta step (``engine/meta.py``): every ``meta_every`` optimiser steps,
right after the real step and on its batch, ``meta_steps`` virtual SGD steps of the cohort on the weighted mutual loss
(ω live), one more on the outer loss (``meta_outer_step``), and the outer loss at the virtual parameters
differentiated into the weighting network; the cohort itself is read, never written. Outer loss: supervised, the
cross-entropy of every stage (official); label-free (ours, the official code has no label-free mode), each member's
unweighted final-stage InfoNCE between the two views, the quantity the k-NN evaluation rewards, which the weighted
inner loss does not contain as such. ``meta: false`` fixes ω ≡ 1 (the paper's ablation).

``mode: label_free`` (ours): two augmented views; the keys of a view are the other view's embeddings of the same
(member, stage), in-batch (every other image of the batch a negative), both directions averaged; no key encoder, no
queue, no classifier, no aggregator.

* ``config.py``: ``LMCLConfig``, the method's settings;
* ``cohort.py``: ``Cohort`` (what the virtual steps move), ``StageHead`` (a branch as a model, for its evaluation),
  ``final_instance_nce`` (the label-free outer loss);
* ``method.py``: ``LMCL``, the method module, the registry's ``lmcl``.
"""
