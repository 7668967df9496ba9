"""`leantrain demo`: placeholder replaced below once the sampling core lands."""
