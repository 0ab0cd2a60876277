"""Training: models (registry), loss weightings, the trainer, metrics and checkpoints."""
