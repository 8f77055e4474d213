# The comet image: the static comet binary on an empty base (scratch), run
# as a non-root user, data in the volume /data.
#
# Build it with scripts/image.sh, which builds the linux binary with
# scripts/release.sh (no Go toolchain or base image is pulled) and stages
# the small build context this file expects:
#
#   comet-linux-ARCH      the binary (ARCH: amd64, arm64)
#   data/                 an empty directory, the image's /data
#   ca-certificates.crt   CA certificates for outbound HTTPS (--rpc-url);
#                         empty when the build machine has none
#
# By hand: docker build --build-arg TARGETARCH=arm64 -t comet:dev DIR
FROM scratch

# BuildKit sets TARGETARCH; the classic builder does not: amd64 then.
ARG TARGETARCH=amd64
ARG BINARY=comet-linux-${TARGETARCH}
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=

LABEL org.opencontainers.image.title="comet" \
      org.opencontainers.image.description="Comet: a durable real-time messaging server (hubs, gateways, standalone)" \
      org.opencontainers.image.source="https://github.com/comethq/comet" \
      org.opencontainers.image.url="https://github.com/comethq/comet" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY ${BINARY} /comet
# scratch has no shell to mkdir or chown: /data comes from the empty
# data/ of the build context, owned by the user comet runs as. A new named
# volume mounted there takes this owner; a bind mount keeps its own (make
# it writable by 65532).
COPY --chown=65532:65532 data/ /data/

USER 65532:65532
WORKDIR /data
VOLUME /data

# Every flag also reads COMET_<FLAG>; a flag given on the command line wins.
# These make every command listen beyond the container's loopback and keep
# its data in the volume.
ENV COMET_LISTEN=0.0.0.0:8080 \
    COMET_DATA=/data

# 8080: clients (gateway, standalone); 7001: Raft; 7101: hub API.
EXPOSE 8080 7001 7101

ENTRYPOINT ["/comet"]
CMD ["standalone"]
