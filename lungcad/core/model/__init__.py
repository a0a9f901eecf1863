"""The multi-task network: building, checkpoints, loading, prediction and Grad-CAM."""
