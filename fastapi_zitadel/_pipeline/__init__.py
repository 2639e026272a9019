"""Verification: the pipeline (caches, single flight), the pluggable ``Validator`` that
decides what the caches could not, and the claim checks that make a ``Principal``."""
