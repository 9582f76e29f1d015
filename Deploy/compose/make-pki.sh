#!/bin/sh
# The compose fleet's CA and certificates, made once. The CA and its key stay
# in LOUPE_PKI_DIR (the pki-ca volume, mounted by this service alone); each
# role gets only its own files in PKI_OUT/ROLE (one volume per role):
#   manager: ca.pem, manager.pem, manager-key.pem, revoked.json, and the
#            operator certificate the CLI uses inside the manager container
#   cam-N:   ca.pem, agent-cam-N.pem, agent-cam-N-key.pem
# Keys are mode 0600 from their first byte (`loupe tls` writes them so).
set -eu
: "${LOUPE_PKI_DIR:?}" "${PKI_OUT:?}"
cameras="${PKI_CAMERAS:-cam-1 cam-2 cam-3}"
if [ ! -s "$LOUPE_PKI_DIR/ca.pem" ]; then
  loupe tls ca create --org "Compose Plant"
  loupe tls cert create --manager --host manager --host localhost
  for camera in $cameras; do loupe tls cert create --agent "$camera"; done
  loupe tls cert create --operator ops
fi
give() {  # give ROLE FILE...: copies FILEs from the CA folder into the role's folder, keys 0600, others 0644
  role=$1; shift
  mkdir -p "$PKI_OUT/$role"
  for file in "$@"; do
    case "$file" in *-key.pem) mode=0600 ;; *) mode=0644 ;; esac
    install -m "$mode" "$LOUPE_PKI_DIR/$file" "$PKI_OUT/$role/$file"
  done
}
give manager ca.pem manager.pem manager-key.pem revoked.json operator-ops.pem operator-ops-key.pem
for camera in $cameras; do give "$camera" ca.pem "agent-$camera.pem" "agent-$camera-key.pem"; done
echo "pki: made in $LOUPE_PKI_DIR, handed out in $PKI_OUT"
