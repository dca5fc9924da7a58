"""Training, evaluation and export of AudioRepInceptionNeXt models on the paper's datasets."""
