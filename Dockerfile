FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng tesseract-ocr-fra tesseract-ocr-osd libimage-exiftool-perl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY imago_pipeline ./imago_pipeline
COPY imago_api ./imago_api
COPY training ./training
COPY dbt_like_sql ./dbt_like_sql
RUN pip install --no-cache-dir .

ENV DAGSTER_HOME=/opt/dagster/home \
    IMAGO_HOME=/data \
    OMP_THREAD_LIMIT=1
COPY dagster.yaml workspace.yaml /opt/dagster/home/
EXPOSE 3000 4000 8000
