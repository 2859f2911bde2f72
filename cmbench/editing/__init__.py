"""Zero-shot editing (CM Algorithm 4 and its relatives): tasks, the suite's ``editing:`` block and
editing rows, which are sampler runs with a replacement step scored against the ground truth."""
