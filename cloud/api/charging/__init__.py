"""cloud.api.charging."""
