"""Mosquitto 2.0 as the production broker: its configuration, the dynamic-security roles that
encode the device contract, and the provisioner that keeps them in step with the registry.

* ``config`` renders ``mosquitto.conf`` (from ``mosquitto.conf.template``) and the initial
  ``dynamic-security.json`` (the provisioner's admin account, the service account, deny by
  default);
* ``dynsec`` is the I/O-free core: the roles and ACLs, and ``plan``, which turns the broker's
  current accounts and the registry's into the control commands that reconcile them;
* ``provisioner`` speaks the dynamic-security control API over MQTT (``$CONTROL/dynamic-
  security/v1``) through the device link (``cloud.devicelink``).
"""
