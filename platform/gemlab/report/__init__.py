"""Paper-style tables and figures from ``results.parquet`` files: pure functions of the results."""
