"""Recipes: data -> model -> training loop -> report, one file per job."""
