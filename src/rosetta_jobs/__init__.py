"""rosetta-jobs: a Dramatiq job runner for the Rosetta ETL platform."""

__version__ = "0.1.0"
__all__ = ["__version__"]
