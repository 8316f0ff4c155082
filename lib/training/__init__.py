"""What the two models share to be trained: settings, the model folder, the training loop skeleton."""
