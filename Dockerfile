# syntax=docker/dockerfile:1
# One image for every `driftwood` subcommand (up, serve, snapshot, drift, retrainer, flight,
# train, data, keys, ...). libtorch comes from the PyPI torch wheel, as in scripts/setup.
#
#   docker build -t driftwood:0.1.0 .
#   docker run --rm driftwood:0.1.0 --help
ARG RUST_VERSION=1.94
ARG TORCH_VERSION=2.13.0

# --- libtorch: the shared libraries of the torch wheel (CPU kernels; libtorch_cpu also links
# the CUDA runtime and CUPTI stubs, from their own wheels) ---
FROM python:3.11-slim-bookworm AS libtorch
ARG TORCH_VERSION
RUN pip install --no-cache-dir --no-deps --target /opt/py \
      "torch==${TORCH_VERSION}" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85" \
 && mkdir -p /opt/libtorch \
 && mv /opt/py/torch/lib /opt/py/torch/include /opt/py/torch/share /opt/libtorch/ \
 && cp -a /opt/py/nvidia/cu13/lib/libcudart.so* /opt/py/nvidia/cu13/lib/libcupti.so* /opt/libtorch/lib/ \
 && rm -rf /opt/py

# --- build ---
FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake=3.25.* protobuf-compiler=3.21.* libssl-dev=3.0.* libcurl4-openssl-dev=7.88.* \
      pkg-config=1.8.* zlib1g-dev=1:1.2.* \
 && rm -rf /var/lib/apt/lists/*
COPY --from=libtorch /opt/libtorch /opt/libtorch
ENV LIBTORCH=/opt/libtorch LIBTORCH_CXX11_ABI=1
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin driftwood \
 && install -m 0755 target/release/driftwood /usr/local/bin/driftwood

# --- runtime: non-root, no compiler, no Python ---
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates=2023* libssl3=3.0.* libcurl4=7.88.* zlib1g=1:1.2.* libgomp1=12.* curl=7.88.* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/driftwood --create-home driftwood
COPY --from=libtorch /opt/libtorch/lib /opt/libtorch/lib
COPY --from=build /usr/local/bin/driftwood /usr/local/bin/driftwood
COPY driftwood.toml /etc/driftwood/driftwood.toml
COPY monitoring /usr/share/driftwood/monitoring
ENV LD_LIBRARY_PATH=/opt/libtorch/lib \
    DRIFTWOOD_CONFIG=/etc/driftwood/driftwood.toml \
    DRIFTWOOD_DATA_DIR=/var/lib/driftwood/data \
    DRIFTWOOD_LOG_FORMAT=json \
    DRIFTWOOD_SERVE_LISTEN=0.0.0.0:8080 \
    DRIFTWOOD_FLIGHT_LISTEN=0.0.0.0:50051
USER 10001:10001
WORKDIR /var/lib/driftwood
VOLUME ["/var/lib/driftwood/data"]
# REST API (+ /metrics), Flight SQL, metrics of the services without a REST API.
EXPOSE 8080 50051 9101
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
  CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/driftwood"]
CMD ["up"]
