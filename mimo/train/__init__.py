"""Training: pretraining with the MTP loss, SFT, checkpoints with exact resume, metrics and plots."""
