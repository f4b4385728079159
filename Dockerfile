# The gateway on the demo config. Build: docker build -t mcp-tag-gateway .
# Run:   docker run --rm -p 127.0.0.1:8080:8080 mcp-tag-gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md requirements.lock requirements-build.lock ./
COPY gateway ./gateway
# The venv sits where the demo config's upstreams expect their Python (../.venv); its
# packages are the lock's, as CI tested them, and so are pip and the build backend.
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install --no-cache-dir --require-hashes -r requirements-build.lock \
    && /app/.venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock \
    && /app/.venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --system --uid 10001 gateway
ENV PATH=/app/.venv/bin:$PATH

COPY configs ./configs
# data_dir: the audit log and the approved tool definitions.
RUN mkdir -p configs/.gateway && chown gateway configs/.gateway
USER gateway
EXPOSE 8080
# Inside a container the gateway must listen on all interfaces to be reachable through
# the published port; the host decides who can reach that port.
CMD ["gateway", "serve", "--config", "configs/gateway.yaml", "--host", "0.0.0.0", "--port", "8080"]
