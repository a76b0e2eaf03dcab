"""Self-supervised prototypes: encoders, embeddings, k-means and the distance-to-prototype scores."""
