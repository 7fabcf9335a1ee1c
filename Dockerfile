# The govstream image compose.yaml builds: the package and its console script.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY events events
COPY streams streams
COPY projections projections
COPY sql sql
COPY policies policies
COPY govstream govstream
RUN pip install --no-cache-dir '.[worker]'
ENV GOVSTREAM_WEB_HOST=0.0.0.0
ENTRYPOINT []
