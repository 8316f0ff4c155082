"""MONAI Label infer tasks (BasicInferTask), thin wrappers over lib.loris and lib.detection."""
