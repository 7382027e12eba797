"""`liandan serve`: the HTTP API, the study queue, the workers, the dashboard, the token."""
