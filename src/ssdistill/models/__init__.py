"""Models: timm students (``models.students``), frozen teachers with their preprocessing and taps
(``models.teachers``), heads, momentum copies, BatchNorm helpers, CIFAR ResNets, hand-crafted representations."""
