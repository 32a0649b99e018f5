"""Novel-view camera paths with time."""
