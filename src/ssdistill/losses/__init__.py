from ssdistill.losses.regression import feature_regression_loss

__all__ = ["feature_regression_loss"]
