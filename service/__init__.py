"""liandan service: study specs, plans, Ray Tune runner, storage, API, reports."""
