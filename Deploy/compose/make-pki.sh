#!/bin/sh
# The compose fleet's CA and certificates, made once (kept in the pki volume).
set -eu
if [ -s "$LOUPE_PKI_DIR/ca.pem" ]; then echo "pki: already made"; exit 0; fi
loupe tls ca create --org "Compose Plant"
loupe tls cert create --manager --host manager --host localhost
for camera in cam-1 cam-2 cam-3; do loupe tls cert create --agent "$camera"; done
loupe tls cert create --operator ops
echo "pki: made in $LOUPE_PKI_DIR"
