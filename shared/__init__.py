"""What two or more systems use: the CLI, callbacks, checkpoint checks, figures."""
