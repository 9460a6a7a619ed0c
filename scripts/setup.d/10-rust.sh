# Rust via rustup, with rustfmt, clippy and the wasm32-wasip2 target (guest
# plugins are built for it); a C toolchain and curl from Debian.
# Sourced by scripts/setup: `as_root`, `step` and `apt_install` are defined.

if command -v apt-get >/dev/null; then
    # libssl-dev and zlib1g-dev: librdkafka (the Kafka client) is built from source.
    apt_install build-essential curl ca-certificates pkg-config libssl-dev zlib1g-dev
fi

if ! command -v cargo >/dev/null; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        step "installing Rust with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi

if command -v rustup >/dev/null; then
    installed=$(rustup target list --installed)
    if ! grep -qx wasm32-wasip2 <<<"$installed"; then
        step "adding the wasm32-wasip2 target"
        rustup target add wasm32-wasip2
    fi
    components=$(rustup component list --installed)
    for component in rustfmt clippy; do
        if ! grep -q "^$component" <<<"$components"; then
            step "adding $component"
            rustup component add "$component"
        fi
    done
fi
