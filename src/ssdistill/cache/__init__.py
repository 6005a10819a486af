"""Teacher outputs on disk: a chunked, checksummed, resumable store (``cache.store``), filled by running a frozen
teacher over a dataset (``cache.fill``) or over an augmentation bank (``cache.bank``); neighbour bags and k-means
beside an entry (``cache.neighbours``); per-sample signals a method reads by index (``cache.signals``)."""
