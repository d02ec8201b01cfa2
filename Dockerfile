# Painter studio: docker build -t painter . && docker run -p 7860:7860 -v painter-models:/home/painter/.cache/painter painter
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 \
    PAINTER_CACHE=/home/painter/.cache/painter
RUN useradd --create-home --uid 1000 painter
WORKDIR /home/painter/app

# CPU wheels of torch (no CUDA download); everything else from PyPI.
COPY requirements.txt requirements-app.txt ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements-app.txt

COPY --chown=painter:painter . .
RUN pip install --no-deps -e .
USER painter
RUN mkdir -p "$PAINTER_CACHE"
VOLUME ["/home/painter/.cache/painter"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)" || exit 1
CMD ["python", "app.py"]
