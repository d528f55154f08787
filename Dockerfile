# mixnet-bids BIDS-App image. Build: `make image` (podman, offline-ready base; see README).
#
# BASE_IMAGE: a Debian 12 image with Python 3.11; `make image` makes one locally with
# mmdebstrap, so no registry is needed. Python packages: exactly the versions of
# requirements.lock (`make lock`), torch its CPU build, whose wheel pip finds in the folder
# that `make image` mounts during the build (TORCH_WHEELS); two builds give the same software.
ARG BASE_IMAGE=localhost/debian-bookworm-minbase:12

# the dependencies in a stage of their own: the final image copies them in a layer that is
# reused while requirements.lock is unchanged, so a source change rebuilds only a few MB
FROM ${BASE_IMAGE} AS dependencies
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/mixnet-bids
ENV PATH=/opt/mixnet-bids/bin:$PATH
COPY requirements.lock /src/requirements.lock
RUN pip install --no-deps -r /src/requirements.lock \
    && pip check

FROM ${BASE_IMAGE}
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="mixnet-bids" \
      org.opencontainers.image.description="MixNet brain-tissue segmentation as a BIDS-App" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/mixnet-bids/mixnet-bids" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=dependencies /opt/mixnet-bids /opt/mixnet-bids
ENV PATH=/opt/mixnet-bids/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt setup.py pyproject.toml README.md /src/
COPY mixnet_bids /src/mixnet_bids
COPY workflows /src/workflows
# (pip writes the bytecode, so the read-only image needs no writes at import)
RUN pip install --no-deps /src && rm -rf /src
# Any UID, read-only root, no network: nothing is written outside the output and work
# folders; caches go to /tmp (a tmpfs under `--read-only`) or nowhere.
ENV TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    NIPYPE_NO_ET=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    PYTHONDONTWRITEBYTECODE=1
# the template files, in TemplateFlow's layout, built now so that runs need no network
RUN python3 -c "from mixnet_bids.templates import ensure_templateflow; ensure_templateflow()" \
    && chmod -R a+rX /opt/templateflow \
    && mixnet-bids --version
WORKDIR /tmp
ENTRYPOINT ["mixnet-bids"]
CMD ["--help"]
