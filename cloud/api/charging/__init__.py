"""REST resources of ``cloud.charging``: sessions (start, stop, live view), history and reports."""
