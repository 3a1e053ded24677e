"""stylecam training."""
