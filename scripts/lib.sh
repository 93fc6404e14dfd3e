# Sourced by scripts/test.sh, scripts/schemathesis.sh and scripts/bench.sh: every process a
# script starts is recorded in PIDS and stopped, by PID, when the script exits; WORK (if
# set) is removed then too.
PY=${PYTHON:-python3}
PIDS=()
WORK=${WORK:-}
stop_started() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
}
trap stop_started EXIT INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Installs moto's server if missing, starts it on a free loopback port, waits until it
# answers, and points the AWS SDKs at it (static test credentials, no instance metadata).
start_moto() {
  if ! command -v moto_server >/dev/null 2>&1 || ! "$PY" -c 'import flask, flask_cors' >/dev/null 2>&1; then
    log "installing moto[server]"
    "$PY" -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
  fi
  local port log_file
  port=$(free_port)
  log_file=$(mktemp -t moto.XXXXXX.log)
  moto_server -H 127.0.0.1 -p "$port" >"$log_file" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 100); do
    if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" >/dev/null 2>&1; then
      break
    fi
    sleep 0.1
  done
  log "moto_server on 127.0.0.1:$port (pid ${PIDS[-1]}, log $log_file)"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true
}
