# Orthanc as myonode's archive: the Debian 12 packages the bare-metal install and the tests
# use (Orthanc 1.10, DICOMweb 1.7, Python plugin 4.0), the archive configuration and plugin.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      orthanc orthanc-dicomweb orthanc-python python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# The plugin runs in Orthanc's embedded python3.11 and imports pyorthanc from this venv.
COPY pyproject.toml /tmp/pyproject.toml
RUN python3.11 -m venv /opt/myonode/.venv \
 && /opt/myonode/.venv/bin/pip install --no-cache-dir \
      "$(grep -o '"pyorthanc[^"]*"' /tmp/pyproject.toml | tr -d '"')" \
 && rm /tmp/pyproject.toml
COPY orthanc/myonode_plugin.py /opt/myonode/orthanc/myonode_plugin.py
COPY orthanc/archive.json /etc/myonode/orthanc/archive.json
ENV PYTHONPATH=/opt/myonode/.venv/lib/python3.11/site-packages \
    TCP_NODELAY=1
# site.json and credentials.json are mounted by docker-compose.yml.
USER orthanc
EXPOSE 4242 8042
CMD ["/usr/sbin/Orthanc", "/etc/myonode/orthanc"]
