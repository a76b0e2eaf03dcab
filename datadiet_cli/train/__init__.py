"""Training: recipes (config), models, batches and augmentation, the training loop, dynamics and evaluation.

Batches live here rather than in data/ because they follow the recipe (image size, crop
padding, augmentation): data/ knows formats and pixels, train/ knows how a model consumes them.
"""
