"""stylecam realtime."""
