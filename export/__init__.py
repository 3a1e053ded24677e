"""stylecam export."""
