"""projectr: declare a project's files and dependencies, reload exactly what changed, watch the disk."""
