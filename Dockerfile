FROM python:3.11-slim

# Build the wheel in a throw-away stage-like step, install it, and run as a plain user.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY resc ./resc
RUN pip install --no-cache-dir . && rm -rf /src

RUN useradd --create-home --uid 10001 resc
USER resc
WORKDIR /home/resc

# docker run -v $PWD/configs:/configs IMAGE /configs/example.hjson
ENTRYPOINT ["resc"]
CMD ["--help"]
