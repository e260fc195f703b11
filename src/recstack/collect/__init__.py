"""Event intake: the collector (API, pixel + cookie, identify, consent), minimisation at the door, and the Redis
Stream -> Parquet lake path. Torch-free and Hydra-free: settings come in as one typed object."""
