#!/bin/sh
# The compose fleet's CA and certificates, made once. The CA and its key stay
# in LOUPE_PKI_DIR (the pki-ca volume, mounted by this service alone); each
# role gets only its own files in PKI_OUT/ROLE (one volume per role):
#   MANAGER:  ca.pem, manager.pem, manager-key.pem (for the host MANAGER),
#             revoked.json, and the operator certificate the CLI uses inside
#             the manager's container
#   cam-N:    ca.pem, agent-cam-N.pem, agent-cam-N-key.pem
#   WORKER:   ca.pem, worker-WORKER.pem, worker-WORKER-key.pem
# PKI_MANAGERS (default "manager"), PKI_CAMERAS (default "cam-1 cam-2
# cam-3") and PKI_WORKERS (default none) name them.
# Keys are mode 0600 from their first byte (`loupe tls` writes them so).
set -eu
: "${LOUPE_PKI_DIR:?}" "${PKI_OUT:?}"
managers="${PKI_MANAGERS:-manager}"
cameras="${PKI_CAMERAS:-cam-1 cam-2 cam-3}"
workers="${PKI_WORKERS:-}"
if [ ! -s "$LOUPE_PKI_DIR/ca.pem" ]; then
  loupe tls ca create --org "Compose Plant"
  for manager in $managers; do  # each in its own folder: every manager's files are called manager*.pem
    mkdir -p "$LOUPE_PKI_DIR/$manager"
    loupe tls cert create --manager --name "$manager" --host "$manager" --host localhost --out "$LOUPE_PKI_DIR/$manager"
  done
  for camera in $cameras; do loupe tls cert create --agent "$camera"; done
  for worker in $workers; do loupe tls cert create --worker "$worker"; done
  loupe tls cert create --operator ops
fi
give() {  # give ROLE FILE...: copies FILEs (paths in the CA folder) into the role's folder, keys 0600, others 0644
  role=$1; shift
  mkdir -p "$PKI_OUT/$role"
  for file in "$@"; do
    case "$file" in *-key.pem) mode=0600 ;; *) mode=0644 ;; esac
    install -m "$mode" "$LOUPE_PKI_DIR/$file" "$PKI_OUT/$role/$(basename "$file")"
  done
}
for manager in $managers; do
  give "$manager" ca.pem "$manager/manager.pem" "$manager/manager-key.pem" revoked.json operator-ops.pem operator-ops-key.pem
done
for camera in $cameras; do give "$camera" ca.pem "agent-$camera.pem" "agent-$camera-key.pem"; done
for worker in $workers; do give "$worker" ca.pem "worker-$worker.pem" "worker-$worker-key.pem"; done
echo "pki: made in $LOUPE_PKI_DIR, handed out in $PKI_OUT"
