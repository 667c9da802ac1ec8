"""The backend's worker bridge (stand-in)."""
