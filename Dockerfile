# syntax=docker/dockerfile:1
# The one `switchback` binary (controller, agent, CLI) in a distroless image that runs as non-root.
# Not built in this repository's CI (no container runtime there); see docs/images.md.
#
# Pin the base images by digest when you build: replace each @sha256:<digest> placeholder with
# the digest of the tag you vetted (`docker buildx imagetools inspect <image:tag>`).

# --- build -----------------------------------------------------------------------------------
# rust:1.95.0-slim-bookworm@sha256:<digest>
FROM rust:1.95.0-slim-bookworm AS build
# git2 links OpenSSL (https); libgit2 and libssh2 are built from their vendored sources.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchback \
 && install -D -m 0755 target/release/switchback /out/switchback

# --- run -------------------------------------------------------------------------------------
# distroless "cc" (glibc, libgcc, libssl3, CA certificates), not "static": the binary links glibc
# and OpenSSL 3 dynamically, exactly the versions of the bookworm builder above.
# gcr.io/distroless/cc-debian12:nonroot@sha256:<digest>
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/switchback /usr/local/bin/switchback
# nonroot = uid/gid 65532, HOME=/home/nonroot (where libgit2 looks for .ssh/known_hosts).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/switchback"]
CMD ["controller"]
