# The ampfleet image: the API (gunicorn), the workers and the one-shots of docker-compose.yml.
# One image, many roles: the command chooses (`ampfleet api`, `ampfleet worker ingest`, ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    AMPFLEET_DATA_DIR=/var/lib/ampfleet AMPFLEET_API_HOST=0.0.0.0
WORKDIR /opt/ampfleet
COPY setup.cfg pyproject.toml README.md ./
COPY cloud ./cloud
COPY broker ./broker
COPY parameters ./parameters
COPY firmware ./firmware
# The prometheus-init one-shot of docker-compose.yml (standard library only).
COPY scripts/prometheus_init.py ./scripts/
RUN pip install --no-cache-dir . \
 && useradd --system --home /var/lib/ampfleet --create-home ampfleet
USER ampfleet
EXPOSE 8080
CMD ["ampfleet", "api"]
