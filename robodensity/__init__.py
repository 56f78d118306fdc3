"""RoboDensity: robot density measured from the robots themselves."""

__version__ = "0.1.0"
