"""Data: dataset sources (listing and decoding each format), ingest, the pixel cache, and seeds."""
