"""The HTTP API of `liandan serve` (FastAPI): submit, watch, cancel and read studies."""
