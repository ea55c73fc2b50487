"""Shared REST machinery: blueprint with pagination links, fields, errors, authorization."""
