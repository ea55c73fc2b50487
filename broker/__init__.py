"""Broker side: amqtt plugins (embedded) and Mosquitto dynamic-security provisioning."""
