"""cloud.api.audit."""
