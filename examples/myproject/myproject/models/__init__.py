"""Domain objects of the catalogue."""
