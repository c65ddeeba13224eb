"""Sweeps (Hydra multirun) and Optuna searches: the job's trial, the study, job folders, the
sweep's status, failures and report."""
