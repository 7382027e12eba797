"""The trial-record vocabulary shared by the runner (which writes it) and the read-outs
(status, API, reports). Light on purpose: importing it pulls in neither Ray nor torch."""

ROLES = ("tune", "seed")  # user attribute `role`

# user attribute `fail_reason` of a FAIL trial
ERROR = "error"  # the objective raised; `error` and `traceback` attributes say what
DIVERGED = "diverged"  # the loss blew up and the metric itself is NaN
NO_METRIC = "no metric"  # the objective never yielded the study's metric
INTERRUPTED = "interrupted"  # the driver died while the trial ran
CANCELLED = "cancelled"  # the study was cancelled while the trial ran
WORKER_LOST = "worker_lost"  # its worker or node died more often than Ray retries

# Trials that did not get to finish: their budget is spent again (now, or on resume).
UNFINISHED = (INTERRUPTED, CANCELLED, WORKER_LOST)
