# Sourced by scripts/test and scripts/bench: installs (when missing) and starts the test backends
# on loopback, exports what the tests need to reach them, and stops them on exit.
#   S3:       s3s-fs 0.14.1 (crates.io; verifies SigV4 and presigned signatures)
#   DynamoDB: moto (PyPI), served one request at a time (scripts/moto_serial.py)
#   ClamAV:   Debian's clamd, with a signature database of our own (no internet for freshclam)
#             that finds the EICAR test string anywhere in a stream
# and the clients the tests drive: tus-js-client and puppeteer-core (npm), tuspy (PyPI), and
# Debian's chromium for the browser tests.

PF_S3S_VERSION=0.14.1

pf_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pf_wait_for() { # name, url
  local i
  for i in $(seq 1 100); do
    if curl -s -o /dev/null "$2"; then return 0; fi
    sleep 0.1
  done
  echo "error: $1 did not answer at $2" >&2
  return 1
}

# clamd lives in /usr/sbin, which a non-login PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin:/sbin" ;; esac

pf_install_backends() {
  if ! command -v s3s-fs >/dev/null || ! s3s-fs --version 2>/dev/null | grep -q "$PF_S3S_VERSION"; then
    echo "installing s3s-fs $PF_S3S_VERSION (a few minutes, once)..." >&2
    cargo install "s3s-fs@$PF_S3S_VERSION" --features binary --locked --quiet
  fi
  if ! command -v moto_server >/dev/null; then
    echo "installing moto_server..." >&2
    python3 -m pip install --quiet 'moto[server]'
  fi
  # The real tus clients the resumable tests drive: tus-js-client (npm, pinned in
  # tests/clients/package-lock.json) and tuspy (PyPI).
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing Node.js (Debian's nodejs, npm)..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  # puppeteer-core drives Debian's chromium (below) and never downloads a browser of its own.
  [ -d tests/clients/node_modules/puppeteer-core ] ||
    (cd tests/clients && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  if ! python3 -c 'import tusclient' 2>/dev/null; then
    echo "installing tuspy..." >&2
    python3 -m pip install --quiet 'tuspy==1.1.0'
  fi
  # tests/durability.rs reads the service's system calls (fsync before each answer) with strace.
  if ! command -v strace >/dev/null; then
    echo "installing strace..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends strace >/dev/null
  fi
  # The browser the browser tests (tests/browser.rs) drive: Debian's chromium, headless.
  if ! command -v chromium >/dev/null; then
    echo "installing Chromium (Debian's chromium)..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
  if ! command -v clamd >/dev/null || ! command -v sigtool >/dev/null || ! command -v curl >/dev/null; then
    echo "installing clamd (Debian's clamav-daemon)..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      clamav-daemon clamav clamdscan curl >/dev/null
  fi
}

# The EICAR test string is assembled here, never stored in the repository.
pf_eicar_hex() {
  python3 -c 'import sys; s = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*"; assert len(s) == 68; sys.stdout.write(s.encode().hex())'
}

# Starts one clamd: pf_start_clamd NAME MAX_SIZE; sets PF_CLAMD_ADDRESS and PF_CLAMD_SOCKET.
pf_start_clamd() {
  local name=$1 max=$2
  local dir="$PF_BACKENDS_DIR/$name" port
  mkdir -p "$dir/db" "$dir/tmp"
  port=$(pf_free_port)
  echo "Eicar-Test-Signature:0:*:$(pf_eicar_hex)" >"$dir/db/custom.ndb"
  # Limits as given, and a verdict (not a silent OK) for anything over them. The stream may be
  # longer than the scan limits, so that a large file reaches the scan and is called out. No
  # cache of clean results: the bench sends the same bytes again and again, and a cached
  # verdict would time a hash lookup instead of a scan.
  cat >"$dir/clamd.conf" <<CONF
Foreground no
PidFile $dir/clamd.pid
DatabaseDirectory $dir/db
TemporaryDirectory $dir/tmp
LocalSocket $dir/clamd.sock
TCPSocket $port
TCPAddr 127.0.0.1
StreamMaxLength 1200M
MaxFileSize $max
MaxScanSize $max
AlertExceedsMax yes
MaxThreads 20
SelfCheck 0
Bytecode no
DisableCache yes
LogFile $dir/clamd.log
CONF
  clamd -c "$dir/clamd.conf"
  PF_CLAMD_ADDRESS="tcp://127.0.0.1:$port"
  PF_CLAMD_SOCKET="unix://$dir/clamd.sock"
  local i
  for i in $(seq 1 100); do
    if timeout 2 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(b"zPING\0"); sys.exit(0 if s.recv(16).startswith(b"PONG") else 1)' "$port" 2>/dev/null; then
      echo "test clamd ($name, limits $max) on $PF_CLAMD_ADDRESS" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "error: clamd ($name) did not answer PING on port $port" >&2
  cat "$dir/clamd.log" >&2 || true
  return 1
}

pf_start_backends() {
  pf_install_backends
  PF_BACKENDS_DIR=$(mktemp -d)
  mkdir -p "$PF_BACKENDS_DIR/s3"
  local s3_port ddb_port
  s3_port=$(pf_free_port)
  ddb_port=$(pf_free_port)
  export AWS_ACCESS_KEY_ID=pf-test-access-key
  export AWS_SECRET_ACCESS_KEY=pf-test-secret-key
  export AWS_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true
  export AWS_ENDPOINT_URL_S3="http://127.0.0.1:$s3_port"
  export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port"
  export PF_TEST_S3_DIR="$PF_BACKENDS_DIR/s3"
  s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$PF_TEST_S3_DIR" >"$PF_BACKENDS_DIR/s3s-fs.log" 2>&1 &
  PF_S3S_PID=$!
  export PF_TEST_S3_PID=$PF_S3S_PID
  # One request at a time: moto's conditional writes are not atomic when requests overlap.
  python3 scripts/moto_serial.py 127.0.0.1 "$ddb_port" >"$PF_BACKENDS_DIR/moto.log" 2>&1 &
  PF_MOTO_PID=$!
  trap pf_stop_backends EXIT
  pf_wait_for s3s-fs "$AWS_ENDPOINT_URL_S3/"
  pf_wait_for moto_server "$AWS_ENDPOINT_URL_DYNAMODB/moto-api/"
  # The main clamd scans anything the service accepts; a second one, with 1 MiB limits, shows
  # what a file too large to scan whole gets (Heuristics.Limits.Exceeded).
  pf_start_clamd clamd 1200M
  export PF_TEST_CLAMD=$PF_CLAMD_ADDRESS PF_TEST_CLAMD_SOCKET=$PF_CLAMD_SOCKET
  # For the bench, which counts the CPU time of every process in the path.
  export PF_TEST_CLAMD_PIDFILE="$PF_BACKENDS_DIR/clamd/clamd.pid"
  pf_start_clamd clamd-small 1M
  export PF_TEST_CLAMD_SMALL=$PF_CLAMD_ADDRESS
  # A third one whose signatures the rescan tests add to (a marker of their own each) and
  # RELOAD, so that the others always scan with the same database.
  pf_start_clamd clamd-rescan 1200M
  export PF_TEST_CLAMD_RESCAN=$PF_CLAMD_ADDRESS PF_TEST_CLAMD_RESCAN_DB="$PF_BACKENDS_DIR/clamd-rescan/db"
  echo "test backends: s3s-fs on $AWS_ENDPOINT_URL_S3, moto_server on $AWS_ENDPOINT_URL_DYNAMODB" >&2
}

pf_stop_backends() {
  kill "${PF_S3S_PID:-}" "${PF_MOTO_PID:-}" 2>/dev/null || true
  local pid
  for pid in "${PF_BACKENDS_DIR:-/nonexistent}"/clamd*/clamd.pid; do
    if [ -f "$pid" ]; then kill "$(cat "$pid")" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
  rm -rf "${PF_BACKENDS_DIR:-/nonexistent}"
}
