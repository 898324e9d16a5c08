"""The run path: the stage contract, the stages' order, plans, executors, workers and resume."""
