"""Fuzz targets for every parser a remote peer reaches (see fuzz/README.md)."""
