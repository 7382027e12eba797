"""`python -m service.cli`: the same command line as `liandan`."""

from service.cli import app

app()
