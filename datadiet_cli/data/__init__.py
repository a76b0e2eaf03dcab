"""Data: dataset sources (listing and decoding each format), the pixel cache, batching and augmentation."""
