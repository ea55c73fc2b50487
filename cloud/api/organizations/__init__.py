"""REST resources of ``cloud.organizations``: organizations and sites."""
