"""Pure loss functions (tensors in, tensor out), shared by the methods and the evaluation."""
