"""Getting MNIST: the canonical files and their checks, where their bytes come from, and reading them."""
