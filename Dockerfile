# syntax=docker/dockerfile:1
# The treeserve image: one image for the gateway, the sync, the MLflow server, the drift/pipeline
# jobs and the Locust master/workers (each compose service picks its command). Triton runs from
# NVIDIA's NGC image, not this one.
#
# Stage 1 builds a virtual environment with the runtime requirements only (requirements/app.in
# without the dev/test tools, pinned by requirements/app.lock when it exists); stage 2 copies
# it into a slim image that runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The compose profile `airflow` (target `airflow`): Airflow's own image, same Python and Debian.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/ requirements/
# Services need no test/lint tools, and only the gRPC/HTTP Triton clients (not the CUDA extras).
RUN grep -vE '^(pytest|pytest-timeout|hypothesis|schemathesis|ruff|mypy)([^A-Za-z0-9_.-]|$)' requirements/app.in \
      | sed -e 's/^tritonclient\[all\]/tritonclient[grpc,http]/' > /tmp/runtime.in \
 && if [ -f requirements/app.lock ]; then \
      pip install -r /tmp/runtime.in -c requirements/app.lock; \
    else \
      pip install -r /tmp/runtime.in; \
    fi
COPY pyproject.toml README.md ./
COPY treeserve/ treeserve/
COPY treeserve_app/ treeserve_app/
COPY exporter/ exporter/
COPY gateway/ gateway/
COPY training/ training/
COPY drift/ drift/
COPY loadtest/ loadtest/
RUN pip install --no-deps . \
 && python -m compileall -q /opt/venv/lib

# Target `airflow`: the scheduler, API server and DAG processor of the compose profile `airflow`.
# Airflow's pins conflict with treeserve's, so treeserve's environment sits beside Airflow's at the
# same path as in the runtime image; the DAG's tasks run it (@task.external_python).
FROM ${AIRFLOW_IMAGE} AS airflow
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /models /app/var/data /app/var/sync /app/var/predlog /app/var/metrics /app/var/scores /app/reports \
 && chown -R 10001:0 /models /app
COPY --from=build /opt/venv /opt/venv
COPY --chown=10001:0 feature_repo/ /app/feature_repo/
ENV AIRFLOW_VAR_TREESERVE_PYTHON=/opt/venv/bin/python \
    TREESERVE_HOME=/app \
    OMP_NUM_THREADS=1
USER airflow

FROM ${PYTHON_IMAGE} AS runtime
# libgomp: XGBoost's OpenMP runtime. Nothing else from the OS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 treeserve \
 && useradd --system --uid 10001 --gid treeserve --home-dir /app --shell /usr/sbin/nologin treeserve
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The Feast definitions (treeserve features apply) and the locustfile (locust -f) are read from
# disk; the packages themselves are installed in /opt/venv.
COPY --chown=treeserve:treeserve feature_repo/ feature_repo/
COPY --chown=treeserve:treeserve loadtest/locustfile.py loadtest/locustfile.py
# Mount points owned by the service user: Docker seeds new named volumes from these.
RUN mkdir -p /models /mlflow/artifacts /app/var/data /app/var/sync /app/var/predlog /app/var/metrics /app/var/scores /app/reports \
 && chown -R treeserve:treeserve /models /mlflow /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    TREESERVE_HOME=/app
USER treeserve:treeserve
EXPOSE 8080 8081 8070 5000 8089
CMD ["treeserve", "--help"]
