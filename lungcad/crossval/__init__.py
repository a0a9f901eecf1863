"""k-fold cross-validation: the out-of-fold report over the folds' models, evaluations and
detections."""
