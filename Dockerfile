# A Shoal worker image for any FaaS or container platform (Knative, OpenFaaS, Cloud Run):
# `shoal worker` listening on 0.0.0.0, port $PORT (which these platforms set; 8080 when
# unset), running one invocation per POST /invoke.
#
#   docker build -t shoal-worker .
#   docker run -p 8080:8080 -e SHOAL_SECRET=... -e SHOAL_WORKER_TOKEN=... shoal-worker
#
# Clients then use workers="http(s)://HOST/invoke" with the same SHOAL_SECRET and the
# token (?token=... in that URL, or SHOAL_WORKER_TOKEN). Listening beyond loopback, the
# worker refuses to start without a token. One instance runs one invocation at a time: give
# the platform a concurrency of 1 per instance so it scales out instead of queueing.
# The client's own code travels with each run; packages its tasks import must be in the
# image: give a requirements file (in the build context) as a build argument,
#
#   docker build --build-arg REQUIREMENTS=requirements.txt -t shoal-worker-$(shoal env key requirements.txt) .
#
# and point the tasks that need them (@shoal.task(requirements=[...]) or
# compute(requirements="requirements.txt")) at that image's endpoint. A worker refuses an
# invocation whose requirements this image lacks, naming them, before running anything.

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package build needs (pyproject names README.md as its readme), so that a
# local .venv or caches never enter the image.
COPY pyproject.toml README.md /tmp/shoal-src/
COPY shoal /tmp/shoal-src/shoal
# The gateway extra is the redis one plus the HTTP server and client (starlette, uvicorn,
# httpx) that `shoal worker` runs on and hands out work with.
RUN pip install "/tmp/shoal-src[gateway]" && rm -rf /tmp/shoal-src
# The tasks' requirements (none unless REQUIREMENTS names a file): installed after Shoal, so
# that changing them rebuilds this layer only. README.md stands in when there is none.
ARG REQUIREMENTS=""
COPY ${REQUIREMENTS:-README.md} /tmp/requirements.txt
RUN if [ -n "$REQUIREMENTS" ]; then pip install -r /tmp/requirements.txt; fi \
    && rm /tmp/requirements.txt

# User code runs in here: not as root.
RUN useradd --create-home --uid 10001 shoal
USER shoal
WORKDIR /home/shoal

ENV PORT=8080
EXPOSE 8080
# A shell only to read $PORT; exec hands it PID 1, so the platform's SIGTERM reaches
# uvicorn, which finishes the invocation in flight before it exits.
CMD ["sh", "-c", "exec shoal worker --host 0.0.0.0 --port \"${PORT:-8080}\""]
