"""What every command stands on: configs and their checks, run folders, checkpoint files,
the runtime, distributed training, stop signals, the cluster, loggers and errors."""
