# The node and the viewer (one image, two commands). TORCH_INDEX_URL picks the torch build:
# the CPU wheel by default, a CUDA one for the GPU variant (docker-compose.gpu.yml).
FROM debian:bookworm-slim AS ohif
RUN apt-get update \
 && apt-get install -y --no-install-recommends npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/install-ohif.sh /tmp/install-ohif.sh
RUN /tmp/install-ohif.sh /ohif

FROM debian:bookworm-slim
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/myonode --create-home myonode
COPY pyproject.toml README.md /opt/myonode/
COPY node /opt/myonode/node
COPY models /opt/myonode/models
COPY dicom_profiles /opt/myonode/dicom_profiles
# torch first and pinned (as deploy/setup.sh does), from the chosen index; then the node.
RUN python3.11 -m venv /opt/myonode/.venv \
 && /opt/myonode/.venv/bin/pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" \
      "$(grep -o '"torch==[^"]*"' /opt/myonode/pyproject.toml | tr -d '"')" \
 && /opt/myonode/.venv/bin/pip install --no-cache-dir "/opt/myonode[scale]"
COPY --from=ohif /ohif /opt/myonode/ohif
ENV MYONODE_CONFIG=/etc/myonode/myonode.yaml
USER myonode
EXPOSE 11112 8080 3000
CMD ["/opt/myonode/.venv/bin/myonode", "serve"]
