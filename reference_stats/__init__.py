"""Reference statistics shipped with cmbench (installed as the package ``cmbench.reference_stats``)."""
