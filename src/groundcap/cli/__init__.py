"""The `groundcap` command (`app`) and what its sub-commands share (`common`)."""
