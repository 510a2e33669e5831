# The dataflow and the API share one image: `atp run` or `atp serve`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ATP_STATE_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY atp ./atp
COPY schemas ./schemas
COPY state ./state
COPY dataflows ./dataflows
COPY serving ./serving
COPY loadtest ./loadtest
RUN pip install --no-cache-dir . && useradd --create-home atp && mkdir -p /data && chown atp /data
USER atp
VOLUME ["/data"]
EXPOSE 8080 9108
ENTRYPOINT ["atp"]
CMD ["serve"]
