# ferry's container image: a small Debian runtime with the ferry binary,
# running as an unprivileged user, plugins in a volume (replace a file there
# and the pipeline reloads it), a healthcheck on the admin server.
#
#   docker build -t ferry .            # or: podman build -t ferry .
#   docker run --rm -v $PWD/plugins:/plugins -v $PWD/ferry.toml:/etc/ferry/ferry.toml:ro \
#       -p 9180:9180 ferry
#
# The configuration at /etc/ferry/ferry.toml should set
# `[admin] listen = "0.0.0.0:9180"` for the healthcheck and metrics (or
# FERRY__ADMIN__LISTEN=0.0.0.0:9180). Secrets: `${env:…}` / `${file:…}` in
# the configuration (README, "Configuration").

FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The host only (the default member): guest plugins are built apart.
RUN cargo build --release --locked -p ferry \
 && strip target/release/ferry

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin ferry \
 && mkdir -p /plugins /etc/ferry \
 && chown ferry:ferry /plugins
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
USER 10001:10001
ENV FERRY_CONFIG=/etc/ferry/ferry.toml \
    FERRY_CACHE_DIR=/tmp/ferry-plugins
VOLUME ["/plugins"]
EXPOSE 9180
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s \
    CMD ["/usr/local/bin/ferry", "status", "--ready"]
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["run"]
