#!/bin/sh
# scripts/image.sh [VERSION]
#
# Builds the container image of comet, tagged IMAGE:VERSION and
# IMAGE:latest (IMAGE: $COMET_IMAGE, default comet), the way GoReleaser
# does: it builds the static linux binary with scripts/release.sh, stages
# a small build context (the binary, an empty data/ directory and the CA
# certificates of this machine) and runs `docker build` on it with the
# repository's Dockerfile. Nothing is pulled: the image is FROM scratch,
# and Go runs here, not in a container.
#
# VERSION defaults to `git describe --tags` of a v1.2.3 tag, else
# v0.0.0-dev. A '+' in it becomes '_' in the image tag (docker tags
# allow no '+').
#
# Environment:
#   COMET_IMAGE         the image's name (default comet)
#   COMET_IMAGE_ARCH    amd64 or arm64 (default: the docker daemon's)
#   COMET_IMAGE_BINARY  use this linux binary instead of building one
#   DOCKER              the docker command (default docker)
set -eu

usage() {
	echo "usage: scripts/image.sh [VERSION]   (VERSION like v1.2.3 or v1.2.3-rc.1)" >&2
	exit 2
}
[ $# -le 1 ] || usage
BINARY=${COMET_IMAGE_BINARY:-}
case $BINARY in
"" | /*) ;;
*) BINARY=$PWD/$BINARY ;; # relative to where the script was called from
esac
cd "$(dirname "$0")/.."
VERSION=${1:-$(git describe --tags --match 'v[0-9]*.[0-9]*.[0-9]*' 2>/dev/null || echo v0.0.0-dev)}
case $VERSION in
v[0-9]*.[0-9]*.[0-9]*) ;;
*) usage ;;
esac
case $VERSION in
*[!A-Za-z0-9.+-]*) usage ;;
esac
IMAGE=${COMET_IMAGE:-comet}
DOCKER=${DOCKER:-docker}
TAG=$(printf '%s' "$VERSION" | tr + _)

server_arch=$($DOCKER version --format '{{.Server.Arch}}') || {
	echo "image.sh: cannot reach the docker daemon (is dockerd running?)" >&2
	exit 1
}
ARCH=${COMET_IMAGE_ARCH:-$server_arch}
case $ARCH in
amd64 | arm64) ;;
*)
	echo "image.sh: architecture $ARCH: only amd64 and arm64 are built" >&2
	exit 1
	;;
esac

stage=$(mktemp -d "${TMPDIR:-/tmp}/comet-image.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM

if [ -n "$BINARY" ]; then
	cp "$BINARY" "$stage/comet-linux-$ARCH"
else
	COMET_RELEASE_TARGETS=linux/$ARCH scripts/release.sh "$VERSION" "$stage/bin"
	mv "$stage/bin/comet-$VERSION-linux-$ARCH" "$stage/comet-linux-$ARCH"
	rm -rf "$stage/bin"
fi
chmod 0755 "$stage/comet-linux-$ARCH"
mkdir -m 0755 "$stage/data"
cp Dockerfile .dockerignore "$stage/"
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
	cp /etc/ssl/certs/ca-certificates.crt "$stage/"
else
	echo "image.sh: warning: no /etc/ssl/certs/ca-certificates.crt here: the image has no CA certificates (HTTPS to --rpc-url will fail)" >&2
	: >"$stage/ca-certificates.crt"
fi
chmod 0644 "$stage/ca-certificates.crt"

platform=""
[ "$ARCH" = "$server_arch" ] || platform="--platform=linux/$ARCH"
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
echo "building the image $IMAGE:$TAG ($IMAGE:latest) for linux/$ARCH" >&2
# shellcheck disable=SC2086 # platform is one word or none
$DOCKER build $platform \
	--build-arg "TARGETARCH=$ARCH" \
	--build-arg "VERSION=$VERSION" \
	--build-arg "REVISION=$REVISION" \
	--build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	-t "$IMAGE:$TAG" -t "$IMAGE:latest" "$stage"
echo "built $IMAGE:$TAG and $IMAGE:latest" >&2
