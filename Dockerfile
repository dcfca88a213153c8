# The intentwatch worker. Build context: the repository root (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 intentwatch

WORKDIR /src
COPY pyproject.toml README.md ./
COPY intentwatch ./intentwatch
COPY models ./models
COPY pipeline ./pipeline
RUN pip install ".[worker]"

USER intentwatch
# faust keeps its table state under the working directory
WORKDIR /home/intentwatch

EXPOSE 6066
CMD ["intentwatch", "worker"]
