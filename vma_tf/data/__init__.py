"""Locating, verifying and loading the datasets used by the VMA experiments."""
