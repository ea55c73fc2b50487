#!/usr/bin/env bash
# Make sure the services the tests use are there: MariaDB up on 127.0.0.1:3306 (root, no
# password); the mosquitto and influxd binaries installed (the tests start their own instances,
# with the project's configuration, on free ports); prometheus, mosquitto_pub and wget for the
# compose-equivalent stack test. Installs and starts what is missing (never a package's own
# service but MariaDB's), so a fresh machine needs nothing by hand.
set -euo pipefail

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

ensure_binary() {  # ensure_binary BINARY PACKAGE
  if [ -x "$1" ] || command -v "$1" >/dev/null 2>&1; then return 0; fi
  echo "services: installing $2"
  apt_install "$2"
}

# Installs PACKAGE without starting its system service (Debian's maintainer scripts would):
# the tests run their own instances. policy-rc.d answering 101 is Debian's way to say so.
ensure_binary_no_service() {  # ensure_binary_no_service BINARY PACKAGE
  if [ -x "$1" ] || command -v "$1" >/dev/null 2>&1; then return 0; fi
  echo "services: installing $2 (its service is not started)"
  local policy=/usr/sbin/policy-rc.d made=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
  fi
  apt_install "$2" || { [ "$made" = 1 ] && rm -f "$policy"; return 1; }
  if [ "$made" = 1 ]; then rm -f "$policy"; fi
}

mariadb_up() { mysqladmin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1; }

ensure_mariadb() {
  if mariadb_up; then return 0; fi
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    echo "services: installing mariadb-server"
    apt_install mariadb-server
  fi
  echo "services: starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 60); do
    if mariadb_up; then return 0; fi
    sleep 1
  done
  echo "services: MariaDB did not come up on 127.0.0.1:3306" >&2
  return 1
}

ensure_mariadb
ensure_binary /usr/sbin/mosquitto mosquitto
ensure_binary /usr/bin/influxd influxdb
# Accepts line protocol on /api/v2/write: proves the influxdb-client (v2) write path for real.
ensure_binary /usr/bin/victoria-metrics victoria-metrics
# The compose-equivalent stack test (tests/stack): Prometheus scrapes the workers; the
# healthchecks of docker-compose.yml use mosquitto_pub and wget.
ensure_binary_no_service /usr/bin/prometheus prometheus
ensure_binary /usr/bin/mosquitto_pub mosquitto-clients
ensure_binary /usr/bin/wget wget
