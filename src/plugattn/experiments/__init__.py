"""Experiments on real data: data sets, the compare backbone, training runs, ``compare`` and ``viz``.

Needs the ``train`` extra (numpy, tqdm) and, for figures, the ``plot`` extra (matplotlib).
"""
