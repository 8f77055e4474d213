#!/bin/sh
# scripts/release.sh VERSION [OUTDIR]
#
# Builds the release binaries of comet: static (CGO_ENABLED=0), with
# -trimpath, for linux, darwin and windows on amd64 and arm64, named
# comet-VERSION-OS-ARCH (.exe on windows), into OUTDIR (default: dist), and
# writes their SHA-256 sums to OUTDIR/comet-VERSION-checksums.txt (the
# format of sha256sum: check them with `sha256sum -c`). The binaries print
# VERSION and the git commit in `comet version`, on /metrics
# (comet_build_info) and in GET /v1/cluster.
#
# Run it from a clean checkout of the tag VERSION (it warns otherwise).
# COMET_RELEASE_TARGETS="linux/amd64 darwin/arm64" builds only those.
set -eu

usage() {
	echo "usage: scripts/release.sh VERSION [OUTDIR]   (VERSION like v1.2.3 or v1.2.3-rc.1)" >&2
	exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
VERSION=$1
OUTDIR=${2:-dist}
case $VERSION in
v[0-9]*.[0-9]*.[0-9]*) ;;
*) usage ;;
esac
case $VERSION in
*[!A-Za-z0-9.+-]*) usage ;;
esac
TARGETS=${COMET_RELEASE_TARGETS:-"linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64"}
GO=${GO:-go}

cd "$(dirname "$0")/.."
COMMIT=$(git rev-parse HEAD 2>/dev/null || true)
if [ -z "$COMMIT" ]; then
	echo "release.sh: warning: not a git checkout: the binaries will not name their commit" >&2
elif [ -n "$(git status --porcelain 2>/dev/null)" ]; then
	echo "release.sh: warning: the checkout has uncommitted changes: the binaries are not exactly commit $COMMIT" >&2
fi
if [ -n "$COMMIT" ] && [ "$(git tag --points-at HEAD 2>/dev/null | grep -cx "$VERSION")" = 0 ]; then
	echo "release.sh: warning: HEAD is not tagged $VERSION: go install ...@$VERSION will not build the same commit" >&2
fi

# The variables internal/buildinfo reads (see its package comment).
BUILDINFO=github.com/comethq/comet/internal/buildinfo
LDFLAGS="-s -w -X $BUILDINFO.version=$VERSION -X $BUILDINFO.commit=$COMMIT"

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
names=""
for target in $TARGETS; do
	os=${target%/*}
	arch=${target#*/}
	name=comet-$VERSION-$os-$arch
	[ "$os" = windows ] && name=$name.exe
	echo "building $name" >&2
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$OUTDIR/$name" ./cmd/comet
	names="$names $name"
done

sums=comet-$VERSION-checksums.txt
(
	cd "$OUTDIR"
	if command -v sha256sum >/dev/null 2>&1; then
		# shellcheck disable=SC2086 # names holds file names without spaces
		sha256sum $names
	else
		# shellcheck disable=SC2086
		shasum -a 256 $names
	fi
) >"$OUTDIR/$sums"
echo "wrote $OUTDIR/$sums" >&2
