"""gbdeploy: release, deploy and verify General Bots services."""

__version__ = "0.1.0"
