"""Quality checks that decide what enters the release, each decision recorded with its reasons."""
