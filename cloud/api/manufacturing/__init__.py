"""REST resources of manufacturing: batches, MAC pools, enrollment, quarantine."""
