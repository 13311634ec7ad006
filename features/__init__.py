"""Data contract, validated ingestion and point-in-time feature pipelines.

Everything here is pandas in, pandas out; only :mod:`features.io` touches files or databases.
"""
