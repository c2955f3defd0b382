# The worker image: a process worker polling the `batchpred` work pool. /app is the workspace,
# a checkout: dvc.yaml, configs/, data/, and flows/ and tasks/, which flow runs import from it
# (the batchpred library is installed). Register the deployments from inside the image, since
# prefect.yaml's pull step records the directory `prefect deploy` ran in: README, "Production:
# server, work pool, worker".
#   docker build -t batchpred-worker .
#   docker run --rm -e PREFECT_API_URL=... batchpred-worker prefect --no-prompt deploy --all
#   docker run -d -e PREFECT_API_URL=... -e BATCHPRED_DATABASE_URL=... batchpred-worker
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GX_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1

WORKDIR /app

# The pinned dependencies first: this layer is rebuilt only when the lock changes.
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock

# Then the project, without dependencies (all pinned above). There is no .git in the image:
# DVC runs without one (core.no_scm, in the untracked .dvc/config.local).
COPY . .
RUN pip install --no-cache-dir --no-deps -e . \
    && dvc config --local core.no_scm true \
    && groupadd --gid 10001 batchpred \
    && useradd --create-home --uid 10001 --gid 10001 batchpred \
    && chown -R 10001:10001 /app

USER 10001:10001
CMD ["prefect", "worker", "start", "--pool", "batchpred"]
