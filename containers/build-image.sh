#!/usr/bin/env bash
# Build the mixnet-bids image with podman on a Debian 12 machine (root), without any image
# registry: the Debian base is made locally with mmdebstrap. Used by `make image` and the
# container tests.
#
#   containers/build-image.sh [IMAGE]        (default mixnet-bids:<version>)
#
# Environment: BASE_IMAGE (the local base's tag), TORCH_WHEELS (folder holding the CPU torch
# wheel, mounted at build time only), HOST_CA (CA bundle for HTTPS through the site proxy,
# mounted at build time only), CONTAINERS_CONF (podman settings; written if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(python3 -c "import re; print(re.search(r'VERSION = \"(.+?)\"', open('setup.py').read())[1])")
image=${1:-mixnet-bids:$version}
base=${BASE_IMAGE:-localhost/debian-bookworm-minbase:12}
wheels=${TORCH_WHEELS:-/opt/wheels}
host_ca=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}

source containers/podman-env.sh

if ! podman image exists "$base"; then
    echo "build-image: making the Debian 12 base $base with mmdebstrap"
    tarball=$(mktemp --suffix=.tar)
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$tarball" >/dev/null
    podman import "$tarball" "$base" >/dev/null
    rm -f "$tarball"
fi

# build-time only: pip trusts the site's CA and finds the CPU torch wheel; neither is
# copied into the image
build_conf=$(mktemp -d)
trap 'rm -rf "$build_conf"' EXIT
printf '[global]\ncert = /run/build/ca.crt\nfind-links = /run/build/wheels\n' \
    > "$build_conf/pip.conf"
mounts=(-v "$build_conf/pip.conf:/etc/pip.conf:ro" -v "$host_ca:/run/build/ca.crt:ro")
[ -d "$wheels" ] && mounts+=(-v "$wheels:/run/build/wheels:ro")

podman build "${mounts[@]}" --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" \
    -t "$image" .
echo "build-image: built $image"
