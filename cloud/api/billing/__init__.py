"""REST resources of ``cloud.billing``: tariffs."""
