"""fleetpulse: capacity and liveness for fleets of desktop and workstation machines."""

__version__ = "0.1.0"

__all__ = ["__version__"]
