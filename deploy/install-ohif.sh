#!/usr/bin/env bash
# Fetch the OHIF viewer (prebuilt, pinned, checksum-verified) from npm into DEST.
#
#   deploy/install-ohif.sh [DEST]     default DEST: .ohif (what viewer.ohif_dir points to)
#
# Only `dist/` of @ohif/app is kept, without ort/ (136 MB of ONNX runtime for OHIF's AI
# tools) and dicom-microscopy-viewer/ (whole-slide imaging), which myonode does not use.
# Needs npm (Debian package "npm", or Node.js from elsewhere). Re-running is a no-op.
set -euo pipefail
version=3.13.2
sha512=5997719a9986eeba85816f5924b71b82bdd70ad2e2d4a0cd3e831a798e4f3deea3e06e1f8c48e393271933a0ba664d85f3b04ac457e9abe8dde715d907d13c10
dest="${1:-.ohif}"

if [ -f "$dest/.version" ] && [ "$(cat "$dest/.version")" = "$version" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to fetch OHIF (apt-get install npm)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@ohif/app@$version" >/dev/null)
echo "$sha512  $tmp/ohif-app-$version.tgz" | sha512sum --check --quiet
tar xzf "$tmp/ohif-app-$version.tgz" -C "$tmp" package/dist
rm -rf "$tmp/package/dist/ort" "$tmp/package/dist/dicom-microscopy-viewer"
echo "$version" > "$tmp/package/dist/.version"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp/package/dist" "$dest"
echo "OHIF $version in $dest"
