#!/usr/bin/env bash
# For each built tag: start capture_server.py, connect twice with ssl_client2
# (defaults + server_name/ca_file only, mirroring arduino-esp32 ssl_client.cpp), save captures.
set -euo pipefail
cd "$(dirname "$0")"
TAGS=("$@"); [ ${#TAGS[@]} -eq 0 ] && TAGS=(v3.6.3 v3.6.4 v3.6.5 v3.6.6)
PORT=44400
mkdir -p captures
for TAG in "${TAGS[@]}"; do
  PORT=$((PORT+1))
  python3 capture_server.py $PORT captures/$TAG.json 2 > captures/$TAG.server.log 2>&1 &
  SPID=$!
  for _ in $(seq 50); do grep -q listening captures/$TAG.server.log 2>/dev/null && break; sleep 0.1; done
  for i in 1 2; do
    ./build/$TAG/programs/ssl/ssl_client2 server_name=localhost server_addr=127.0.0.1 \
        server_port=$PORT ca_file=pki/ca.pem > captures/$TAG.client$i.log 2>&1 || echo "$TAG client$i rc=$?"
  done
  wait $SPID
  echo "== $TAG"; cat captures/$TAG.server.log
done
