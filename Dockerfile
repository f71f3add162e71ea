# Vestibule container image: a release build on Debian bookworm, run as a non-root user.
#   docker build -t vestibule .
# Configuration comes from VESTIBULE_* environment variables and, for a file, VESTIBULE_CONFIG=FILE
# (rather than --config in the container's arguments: the operator's commands run with
# `kubectl exec`/`docker exec … vestibule sessions …` see the container's environment, not its
# arguments, so they find the same file).

FROM rust:1-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, in their own layer: build them against empty stubs so that a change to
# src/ does not rebuild every crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo '//! stub' > src/lib.rs \
    && echo 'fn main() {}' > src/main.rs \
    && cargo build --release --locked --bin vestibule \
    && rm -rf src

# The real sources. templates/ is needed at compile time only (askama embeds them).
COPY src ./src
COPY templates ./templates
# Newer mtimes than the stub build's outputs, so cargo rebuilds the crate itself.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked --bin vestibule \
    && strip target/release/vestibule

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 vestibule \
    && useradd --system --uid 10001 --gid vestibule --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin vestibule
COPY --from=builder /build/target/release/vestibule /usr/local/bin/vestibule
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vestibule"]
