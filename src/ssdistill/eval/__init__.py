from ssdistill.eval.features import extract_features
from ssdistill.eval.knn import knn_accuracy, knn_scores

__all__ = ["extract_features", "knn_accuracy", "knn_scores"]
