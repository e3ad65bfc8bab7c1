# kyso: the API (default command), the Celery worker and beat all run from this one image.
#   docker build -t kyso .
# Build stage: wheels for kyso and every dependency (a compiler only here, for any sdist).
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kyso ./kyso
RUN pip wheel --wheel-dir /wheels .

# Runtime stage.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KYSO_DATA_DIR=/data \
    KYSO_HOST=0.0.0.0 \
    KYSO_PORT=8000
# poppler-utils (pdfsig, pdftoppm) and qpdf: independent checks and repairs; softhsm2 and
# opensc (pkcs11-tool): the PKCS#11 token of the agency key; fonts with every Vietnamese letter
# (fonts-liberation 1.x has none of them: MEASURED.md #4).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      poppler-utils qpdf softhsm2 opensc fonts-liberation2 fonts-dejavu-core ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels kyso && rm -rf /wheels
# A non-root user, allowed into SoftHSM's token directory (group softhsm, from the package).
RUN useradd --system --uid 10001 --create-home --home-dir /home/kyso --shell /usr/sbin/nologin kyso \
 && usermod -aG softhsm kyso \
 && mkdir -p /data /var/lib/softhsm/tokens \
 && chown kyso:kyso /data \
 && chown root:softhsm /var/lib/softhsm/tokens && chmod 2770 /var/lib/softhsm/tokens
USER kyso
WORKDIR /home/kyso
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["kyso", "serve", "--host", "0.0.0.0"]
