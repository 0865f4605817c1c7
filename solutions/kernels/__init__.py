"""Reference kernels: plain functions over tensors (weights passed in), thin modules on top."""
