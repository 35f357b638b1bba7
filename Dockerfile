FROM python:3.11-slim

# Build the wheel in a throw-away stage-like step, install it, and run as a plain user.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY resc ./resc
RUN pip install --no-cache-dir . && rm -rf /src

RUN useradd --create-home --uid 10001 resc
USER resc
WORKDIR /home/resc

# The Redis URL comes from the environment, RESC_REDIS_URL, which overrides the config's
# redis.url (a config's 127.0.0.1 would be this container itself):
#   docker run -e RESC_REDIS_URL=redis://redis:6379/0 -v $PWD/configs:/configs IMAGE /configs/example.hjson
# examples/deploy/ runs it on Kubernetes and with docker compose.
# /metrics, /livez and /readyz, where examples/deploy/resc.hjson's http.listen puts them.
EXPOSE 9090
ENTRYPOINT ["resc"]
CMD ["--help"]
