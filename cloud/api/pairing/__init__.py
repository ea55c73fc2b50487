"""REST resources of labels, releases and pairings (cloud.pairing)."""
