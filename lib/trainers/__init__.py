"""MONAI Label train tasks (BasicTrainTask), thin wrappers over the method training code."""
