"""Training on several processes (GPUs or CPU cores) with PyTorch DDP, launched by torchrun."""
