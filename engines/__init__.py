"""stylecam engines."""
