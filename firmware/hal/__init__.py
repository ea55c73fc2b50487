"""Hardware access: the interface the applications use, and its implementations."""
