# MoodLens server image: gunicorn (threading mode), the bundled model baked in.
#   docker build -t moodlens .
#   docker run -p 8000:8000 -e SECRET_KEY=$(openssl rand -hex 32) moodlens

# Front-end libraries from npm, served by the app itself (no CDN).
FROM node:20-bookworm-slim AS frontend
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MOODLENS_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    THREADS=64
WORKDIR /app

# Dependencies first, so this layer stays cached while the code changes.
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt

RUN useradd --create-home --uid 10001 moodlens
COPY --from=frontend /build/node_modules ./node_modules
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY migrations ./migrations
COPY models ./models
COPY wsgi.py gunicorn.conf.py ./
RUN mkdir -p /app/instance && chown moodlens:moodlens /app/instance

USER moodlens
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=4)" || exit 1
# One worker per process (Flask-SocketIO); scale out with more containers behind nginx
# (docker-compose.yml). Each open Socket.IO connection holds one of the THREADS.
CMD ["sh", "-c", "exec gunicorn -c gunicorn.conf.py -k gthread -w 1 --threads ${THREADS} -b ${HOST}:${PORT} --access-logfile - --error-logfile - wsgi:app"]
