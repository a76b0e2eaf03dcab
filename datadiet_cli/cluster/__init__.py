"""Self-supervised prototypes: encoders, embeddings, k-means and the distance-to-prototype scores.

encoders.py is the registry of `--encoder` kinds; embed.py runs images through one; sources.py
gathers every source of embeddings (encoders, saved files); kmeans.py fits k-means;
prototypes.py turns fits into the scores; pipeline.py's `cluster_manifest` ties them together.
"""
