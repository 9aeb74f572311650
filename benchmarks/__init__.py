"""Reproducible speed and memory measurements of the `ssm` package (`make bench`)."""
