"""The command line (`aftercare`, also `python -m bot`)."""
