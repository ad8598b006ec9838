#!/usr/bin/env bash
# Installs what building (and, with --test, testing) mxraft needs on Debian, if missing.
#   scripts/install-deps.sh          clang/libclang (RocksDB bindings), jq, openssl
#   scripts/install-deps.sh --test   also swaks, postfix (smtp-source, smtp-sink), dnsmasq, iproute2,
#                                    python3, curl, and the nightly toolchain and cargo-fuzz
#                                    for the fuzz targets
# Packages already present are left alone; nothing is started.
set -euo pipefail

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found; install Rust 1.95 or newer (https://rustup.rs) and retry" >&2
    exit 1
fi

missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null || compgen -G "/usr/lib/*/libclang*.so*" >/dev/null || missing+=(libclang-dev)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if ((want_test)); then
    command -v swaks >/dev/null 2>&1 || missing+=(swaks)
    { command -v smtp-source && command -v smtp-sink; } >/dev/null 2>&1 || [[ -x /usr/sbin/smtp-source ]] || missing+=(postfix)
    command -v dnsmasq >/dev/null 2>&1 || [[ -x /usr/sbin/dnsmasq ]] || missing+=(dnsmasq)
    command -v ip >/dev/null 2>&1 || [[ -x /usr/sbin/ip ]] || missing+=(iproute2)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
fi

if ((want_test)); then
    # The fuzz targets (fuzz/) build with a nightly compiler and cargo-fuzz.
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || { echo "install-deps: the fuzz targets need a nightly Rust toolchain, and rustup is not installed" >&2; exit 1; }
        echo "install-deps: installing the nightly Rust toolchain"
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "install-deps: installing cargo-fuzz"
        cargo install cargo-fuzz --locked --version 0.13.2
    fi
fi

if ((${#missing[@]} == 0)); then
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
# Postfix comes only for its tools: answer "No configuration" and never start it.
echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
