# The dataflow and the API share one image: `atp run` or `atp serve`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ATP_STATE_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
# The product only: the fault and load suites (loadtest/) stay out of the image.
COPY core ./core
COPY state ./state
COPY schemas ./schemas
COPY projection ./projection
COPY dataflows ./dataflows
COPY serving ./serving
COPY sandbox ./sandbox
COPY atp ./atp
RUN pip install --no-cache-dir . && useradd --create-home atp && mkdir -p /data && chown atp /data
USER atp
VOLUME ["/data"]
EXPOSE 8080 9108
ENTRYPOINT ["atp"]
CMD ["serve"]
