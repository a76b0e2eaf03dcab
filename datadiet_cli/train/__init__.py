"""Training: recipes (config), models, the training loop, dynamics recording and evaluation."""
