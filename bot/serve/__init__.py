"""The process: checks before start-up, polling and webhook runners, logging."""
