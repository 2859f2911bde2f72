"""Suite files shipped with cmbench (installed as the package ``cmbench.suites``)."""
