# Portcullis container image (docs/release.md, docs/kubernetes.md).
#
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" \
#                --build-arg POLICY_REVISION="<deployment repository commit>" -t portcullis:0.1.0 .
#
# Two stages on Debian 12: the build stage makes a virtual environment in /opt/venv, its CycloneDX SBOM and
# build.json (what GET /version reports); the runtime stage holds Debian's python3.11 (the venv's interpreter),
# bubblewrap (the stdio sandbox, docs/sandbox.md) and libseccomp, runs as the numeric non-root user 65532 and
# has no shell: the last instruction removes them in exec form. The root filesystem is meant to be read-only
# (the Helm chart sets readOnlyRootFilesystem); state lives in /var/lib/portcullis (a volume), the deployment
# is mounted at /etc/portcullis.

ARG DEBIAN_IMAGE=debian:12-slim

FROM ${DEBIAN_IMAGE} AS build
ARG GIT_COMMIT=""
ARG POLICY_REVISION=""
ARG CYCLONEDX_BOM_VERSION=7.5.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3.11 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /src \
    && python3.11 -m venv /opt/sbom-tools \
    && /opt/sbom-tools/bin/pip install --no-cache-dir "cyclonedx-bom==${CYCLONEDX_BOM_VERSION}" \
    && install -d /out \
    && /opt/sbom-tools/bin/cyclonedx-py environment --pyproject /src/pyproject.toml --mc-type application \
       --output-reproducible --validate --of JSON -o /out/sbom.cdx.json /opt/venv/bin/python \
    && /opt/venv/bin/python -m portcullis.build_info --commit "${GIT_COMMIT}" \
       --policy-revision "${POLICY_REVISION}" --output /out/build.json

FROM ${DEBIAN_IMAGE} AS runtime
ARG GIT_COMMIT=""
ARG POLICY_REVISION=""
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="A secure gateway for MCP tool services" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.source="https://github.com/portcullis/portcullis" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.portcullis.policy-revision="${POLICY_REVISION}"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 bubblewrap libseccomp2 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o 65532 -g 65532 -m 0750 /var/lib/portcullis \
    && install -d -m 0755 /etc/portcullis /usr/share/portcullis
COPY --from=build /opt/venv /opt/venv
COPY --from=build /out/sbom.cdx.json /out/build.json /usr/share/portcullis/
ENV PATH=/opt/venv/bin:/usr/sbin:/usr/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/portcullis \
    PORTCULLIS_STATE_DIR=/var/lib/portcullis \
    PORTCULLIS_BUILD_INFO=/usr/share/portcullis/build.json \
    PORTCULLIS_SBOM=/usr/share/portcullis/sbom.cdx.json
# No shell from here on: the gateway execs its stdio services directly, and an intruder gets none.
RUN ["/usr/bin/rm", "-f", "/usr/bin/sh", "/usr/bin/dash", "/usr/bin/bash", "/usr/bin/rbash", "/bin/sh", "/bin/dash", "/bin/bash", "/bin/rbash"]
USER 65532:65532
WORKDIR /var/lib/portcullis
EXPOSE 8080 9464
ENTRYPOINT ["/opt/venv/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis"]
