# syntax=docker/dockerfile:1
#
# tollgate in a container: build with the official Rust image, run on
# distroless (glibc and libgcc, CA certificates, no shell, no package manager)
# as a non-root user.
#
#   docker build -t tollgate .
#   docker run -p 8080:8080 -v tollgate-data:/var/lib/tollgate tollgate

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The context is what .dockerignore allows (manifest, lock file, src/,
# migrations/, the declared bench); .ci/check-docker-context checks it.
COPY . .
# The cache mounts keep the registry and the compiled dependencies between
# builds; the binary is copied out because the target cache is not part of
# the image. The data directory is made here because the runtime image has
# no shell to make it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/tollgate /out/tollgate \
    && install -d -m 0700 /out/data/keys

# Only for its statically linked busybox: the health check below needs an
# HTTP client and a shell to read $PORT, and one 1 MB static binary is the
# smallest sound way to get both into an image that has neither (curl would
# need a Debian base and a dozen libraries).
FROM busybox:1.37-musl AS busybox

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=busybox /bin/busybox /usr/local/bin/busybox
COPY --from=build /out/tollgate /usr/local/bin/tollgate
# Owned by the nonroot user (65532) so that a fresh named volume mounted here
# inherits a writable directory.
COPY --from=build --chown=65532:65532 /out/data /var/lib/tollgate

# PORT makes the gateway listen on [::]:$PORT, IPv4 and IPv6 (platforms that
# inject PORT override it). The SQLite database and the signing keys both
# live in the one data volume: losing the keys would start new ones, losing
# the database would log everyone out. For several instances, or a platform
# without persistent disks, set DATABASE_URL to Postgres and
# TOLLGATE_KEY_STORE=database with TOLLGATE_KEY_ENCRYPTION_KEY: the volume is
# then not needed.
ENV PORT=8080 \
    DATABASE_URL=sqlite:///var/lib/tollgate/tollgate.db \
    TOLLGATE_KEYS_DIR=/var/lib/tollgate/keys \
    TOLLGATE_LOG_FORMAT=json
USER 65532:65532
VOLUME ["/var/lib/tollgate"]
EXPOSE 8080

# /health answers without touching the database. It follows $PORT; with
# TOLLGATE_LISTEN set to another port, override the health check too.
# --timeout bounds the check (wget's own -T is not in every busybox build).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/busybox", "sh", "-c", "exec /usr/local/bin/busybox wget -q -O /dev/null \"http://127.0.0.1:${PORT}/health\""]

# SIGTERM (docker stop) drains in-flight requests before exiting.
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve"]
