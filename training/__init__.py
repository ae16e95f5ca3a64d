"""spectro-fx-train: data sets, the VQ-VAE training loop, prior fitting, evaluation and energy.

Writes the model files that the effect plays.
"""
