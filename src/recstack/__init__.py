"""recstack: interaction logs in, a served and measured recommender out."""

__version__ = "0.1.0"
