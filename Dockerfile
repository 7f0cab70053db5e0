# Builds the service and runs it on the embedded default (SQLite + a local folder) in /data.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin participant-files

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin pf \
    && mkdir -p /data && chown pf /data
COPY --from=build /src/target/release/participant-files /usr/local/bin/participant-files
USER pf
WORKDIR /data
# Listening beyond loopback needs PF_PUBLIC_URL: the base that clients use for upload and
# download URLs. Override it with the address the service is published at.
ENV PF_LISTEN=0.0.0.0:8080 \
    PF_PUBLIC_URL=http://localhost:8080 \
    PF_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["participant-files"]
CMD ["serve"]
