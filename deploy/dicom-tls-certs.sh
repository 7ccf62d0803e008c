#!/usr/bin/env bash
# DICOM TLS certificates for the shipped configuration, made once at install:
#
#   deploy/dicom-tls-certs.sh DIR [HOSTNAME]
#
# DIR/myonode.{crt,key}  the node's listener (self-signed; CN and subjectAltName HOSTNAME,
#                        default this host's name, and 127.0.0.1)
# DIR/orthanc.{crt,key}  Orthanc's client certificate for its forwarding to the node
# DIR/senders.pem        the certificates the node accepts from senders: Orthanc's; append a
#                        scanner's (or its CA's) to let it send straight to the node over TLS
#
# Orthanc trusts myonode.crt (DicomTlsTrustedCertificates), the node trusts senders.pem
# (dicom.tls.ca_certificates). Existing files are kept, so a rerun never replaces a
# certificate that peers already trust. Keys are written 0600; the caller gives each to its
# service's group.
set -euo pipefail
dir="${1:?usage: $0 DIR [HOSTNAME]}"
host="${2:-$(hostname -f 2>/dev/null || hostname)}"
mkdir -p "$dir"
umask 077

self_signed() {  # name, subject CN, extra openssl req arguments...
  local name="$1" cn="$2"
  shift 2
  [ -s "$dir/$name.crt" ] && [ -s "$dir/$name.key" ] && return 0
  openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=$cn" "$@" \
    -keyout "$dir/$name.key" -out "$dir/$name.crt" 2>/dev/null
  chmod 644 "$dir/$name.crt"
}

self_signed myonode "$host" -addext "subjectAltName=DNS:$host,IP:127.0.0.1"
self_signed orthanc "myonode-orthanc"
if [ ! -s "$dir/senders.pem" ]; then
  cp "$dir/orthanc.crt" "$dir/senders.pem"
  chmod 644 "$dir/senders.pem"
fi
