"""Corpora: audio loading, manifests, the demo corpus, adapters for real datasets."""
