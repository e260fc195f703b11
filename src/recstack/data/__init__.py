"""Data layer: sources, preparation, splits, negative sampling, SQL over the prepared Parquet."""
