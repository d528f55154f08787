# Source this: podman settings that work on a Debian 12 VM without CAP_SYS_RESOURCE
# (runc, explicit ulimits within the hard limits), installing podman when missing.
need=(podman runc netavark aardvark-dns iptables mmdebstrap uidmap ca-certificates)
if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null
    else
        echo "podman-env: install ${need[*]} first" >&2
        return 1 2>/dev/null || exit 1
    fi
fi
if [ -z "${CONTAINERS_CONF:-}" ]; then
    export CONTAINERS_CONF="${XDG_CONFIG_HOME:-$HOME/.config}/mixnet-bids/containers.conf"
fi
if [ ! -f "$CONTAINERS_CONF" ]; then
    mkdir -p "$(dirname "$CONTAINERS_CONF")"
    nofile=$(ulimit -Hn)
    cat > "$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
fi
