"""A funcpipe plugin whose entry points cannot be used, each for its own reason."""
