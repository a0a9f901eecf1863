"""The sealed benchmark: whole-length phantom scans of LIDC patients the dataset does not
hold, in LUNA16's layout (``build``), and the figures of one model on them (``score``).

It reports only. Nothing that chooses (training, tuning, promotion, cross-validation, any
threshold) reads it; ``tests/pipeline`` checks the pipelines' dependencies.
"""
