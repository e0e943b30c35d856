"""Discovery Drops: the platform shell (settings, logging, local broker, command line)."""
