# shellcheck shell=bash
# Shared helpers for Holdfast's scripts. Source it; do not execute it.
#
#   . "$(dirname "$0")/lib.sh"
#
# Provides: REPO_ROOT, banner, info, die, need_root, install_deps, ensure_unix_user,
# free_port, wait_port, bin_dir, python_bin.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export REPO_ROOT

banner() {
  printf '\n==================== %s ====================\n' "$*"
}

info() {
  printf '[holdfast] %s\n' "$*" >&2
}

die() {
  printf '[holdfast] ERROR: %s\n' "$*" >&2
  exit 1
}

need_root() {
  [ "$(id -u)" = 0 ] || die "$1 must run as root (try: sudo $0)"
}

# Debian packages the build and the test peers need.
HOLDFAST_APT_PACKAGES=(
  build-essential pkg-config
  smbclient samba samba-testsuite
  python3 python3-pip
  iproute2 procps coreutils util-linux passwd
)

# python3 used for the smbprotocol tests (the first python3 on PATH, like the tests use).
python_bin() {
  printf '%s\n' "${HOLDFAST_PYTHON:-python3}"
}

# True if every test peer is already usable.
deps_present() {
  local py
  py=$(python_bin)
  command -v cc >/dev/null 2>&1 &&
    command -v pkg-config >/dev/null 2>&1 &&
    command -v smbclient >/dev/null 2>&1 &&
    command -v smbtorture >/dev/null 2>&1 &&
    command -v smbd >/dev/null 2>&1 &&
    command -v smbpasswd >/dev/null 2>&1 &&
    command -v stdbuf >/dev/null 2>&1 &&
    command -v ss >/dev/null 2>&1 &&
    command -v "$py" >/dev/null 2>&1 &&
    "$py" -c 'import smbprotocol' >/dev/null 2>&1
}

# Install build deps and test peers (apt + pip). Idempotent; quick no-op when all is there.
# FORCE_INSTALL=1 runs apt/pip even if everything looks present.
install_deps() {
  if [ "${FORCE_INSTALL:-0}" != 1 ] && deps_present; then
    info "dependencies present (smbclient, smbtorture, smbd, python smbprotocol)"
    return 0
  fi
  need_root "installing dependencies"
  local missing=() p
  for p in "${HOLDFAST_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ] || [ "${FORCE_INSTALL:-0}" = 1 ]; then
    info "apt-get install: ${missing[*]:-(forced)}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq
    timeout 1200 apt-get install -y -qq --no-install-recommends "${HOLDFAST_APT_PACKAGES[@]}"
  fi
  # The samba package enables and starts the system smbd/nmbd on port 445/139. Our tests
  # never use it; stop it so it cannot interfere (ignored when there is no systemd).
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now smbd nmbd samba-ad-dc >/dev/null 2>&1 || true
  fi
  local py
  py=$(python_bin)
  if ! "$py" -c 'import smbprotocol' >/dev/null 2>&1; then
    info "pip install smbprotocol (for $py)"
    if ! "$py" -m pip --version >/dev/null 2>&1; then
      die "$py has no pip; install python3-pip or set HOLDFAST_PYTHON"
    fi
    # Debian's own python3 is "externally managed" (PEP 668): pip then needs
    # --break-system-packages. A pyenv/venv python does not.
    if ! timeout 600 "$py" -m pip install -q smbprotocol; then
      timeout 600 "$py" -m pip install -q --break-system-packages smbprotocol
    fi
    "$py" -c 'import smbprotocol' || die "smbprotocol still not importable by $py"
  fi
}

# ensure_unix_user NAME: create a system user without home and login shell if missing.
ensure_unix_user() {
  local u=$1
  if ! id "$u" >/dev/null 2>&1; then
    info "creating Unix user $u (no home, nologin)"
    useradd -M -s /usr/sbin/nologin "$u"
  fi
}

# free_port [START]: print a TCP port on 127.0.0.1 nobody listens on, from START (4456) up.
free_port() {
  local p=${1:-4456} end
  end=$((p + 200))
  while [ "$p" -lt "$end" ]; do
    if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
      printf '%s\n' "$p"
      return 0
    fi
    p=$((p + 1))
  done
  die "no free port in ${1:-4456}..$end"
}

# wait_port PORT PID [SECONDS]: wait until 127.0.0.1:PORT accepts, while PID lives.
wait_port() {
  local port=$1 pid=$2 secs=${3:-20} i
  for ((i = 0; i < secs * 10; i++)); do
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# bin_dir: where holdfast-smbd/holdfastctl are (HOLDFAST_BIN_DIR, else target/release, else PATH).
bin_dir() {
  if [ -n "${HOLDFAST_BIN_DIR:-}" ]; then
    printf '%s\n' "$HOLDFAST_BIN_DIR"
  elif [ -x "$REPO_ROOT/target/release/holdfast-smbd" ]; then
    printf '%s\n' "$REPO_ROOT/target/release"
  elif command -v holdfast-smbd >/dev/null 2>&1; then
    dirname "$(command -v holdfast-smbd)"
  else
    printf '%s\n' "$REPO_ROOT/target/release"
  fi
}

# The anchor (reference Samba harness), if shared/ is beside the repo.
# HOLDFAST_ANCHOR=none pretends there is none.
anchor_dir() {
  local d
  [ "${HOLDFAST_ANCHOR:-}" != none ] || return 1
  for d in "${HOLDFAST_ANCHOR:-}" "$REPO_ROOT/../shared/anchor" /work/shared/anchor; do
    if [ -n "$d" ] && [ -f "$d/samba-up.sh" ]; then
      (cd "$d" && pwd)
      return 0
    fi
  done
  return 1
}

# ensure_cargo: put cargo on PATH (sudo drops ~/.cargo/bin from PATH).
ensure_cargo() {
  command -v cargo >/dev/null 2>&1 && return 0
  local d
  for d in "${CARGO_HOME:-}/bin" "$HOME/.cargo/bin" /root/.cargo/bin \
    "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)/.cargo/bin"; do
    if [ -x "$d/cargo" ]; then
      PATH=$d:$PATH
      export PATH
      return 0
    fi
  done
  die "cargo not found (install Rust with rustup first)"
}
