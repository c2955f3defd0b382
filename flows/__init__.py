"""The Prefect flows. Importing them (as a worker's engine process does) makes known failures
one line in the runs' logs, without a traceback (batchpred.outcomes)."""

from batchpred import outcomes

outcomes.quiet_known_failures_in_run_logs()
