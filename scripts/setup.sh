#!/usr/bin/env bash
# Idempotent set-up of everything the project needs on this machine:
# the virtualenv and packages, Java and Maven, the Kafka broker's jars, and (for the page
# test) Chromium. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

want_chromium=0
for arg in "$@"; do
  [ "$arg" = "--chromium" ] && want_chromium=1
done

apt_install() {
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    [ -n "${_apt_updated:-}" ] || { apt-get update -qq >/dev/null; _apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup: please install: $*" >&2
    return 1
  fi
}

command -v java >/dev/null || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null || apt_install maven
if [ "$want_chromium" = 1 ] && ! command -v chromium >/dev/null; then
  apt_install chromium
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The producer's native page reader (native/, Rust; producers/providers/native.py), rebuilt when
# its sources change. Rust comes with rustup (https://rustup.rs); cargo must be on PATH.
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
native_stamp=.venv/.native-$(cat native/pyproject.toml native/Cargo.toml native/Cargo.lock \
  native/drops_native.pyi native/src/*.rs | sha1sum | cut -c1-12)
if [ ! -f "$native_stamp" ]; then
  if ! command -v cargo >/dev/null; then
    echo "setup: the native page reader needs Rust's cargo (install it with rustup)" >&2
    exit 1
  fi
  .venv/bin/python -m pip install -q ./native
  rm -f .venv/.native-*
  touch "$native_stamp"
fi

# The local broker's jars (pinned version), fetched once into the ignored data folder.
.venv/bin/drops broker fetch
