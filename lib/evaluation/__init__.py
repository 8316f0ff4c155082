"""The evaluation protocol of the paper, baselines, metrics and report."""
