"""An example third-party tokred reducer package (see README.md)."""
