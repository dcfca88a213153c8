# The intentwatch worker. Build context: the repository root (see docker-compose.yml).
# Every Python dependency is pinned with its hashes in docker/worker-requirements.txt
# (`make lock` rewrites it from pyproject.toml); tests/test_docker.py checks this file.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The image's user, and the folders compose mounts volumes on, owned by it (a new named
# volume takes the owner of the folder it is mounted on).
RUN useradd --create-home --uid 10001 intentwatch \
    && install -d -o intentwatch -g intentwatch \
        /var/lib/intentwatch /var/lib/intentwatch-issuer /etc/intentwatch/issuers

WORKDIR /src
COPY docker/worker-requirements.txt ./
RUN pip install --require-hashes --no-deps -r worker-requirements.txt
COPY pyproject.toml README.md ./
COPY intentwatch ./intentwatch
COPY models ./models
COPY pipeline ./pipeline
RUN pip install --no-deps --no-build-isolation . && pip check

USER intentwatch
# faust keeps its table state under the working directory
WORKDIR /home/intentwatch

EXPOSE 6066
# Healthy while the worker judges: its /ready answers 200 once its partitions are
# recovered and Kafka is reachable, 503 otherwise (urlopen raises, the check fails).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/ready', timeout=4)"]
CMD ["intentwatch", "worker"]
