"""A stand-in for the Rosetta backend package, for tests of ``worker.backend_job.run``."""
