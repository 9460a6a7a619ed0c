# The C plugin toolchain (plugins/kessel-outbox/c, plugins/templates/c):
# - clang, wasm-ld and wasi-libc from Debian;
# - wit-bindgen (C bindings) and wasm-tools (core module -> component), built
#   with cargo with only the features the C build uses: about 4 minutes
#   together on two cores; kept when the installed ones are these versions;
# - the WASI preview1 reactor adapter, at the path the build scripts look in.
# Sourced by scripts/setup: `as_root`, `step` and `apt_install` are defined.

c_wit_bindgen_version=0.61.1 # the version of the Rust guests' wit-bindgen
c_wasm_tools_version=1.258.3 # its wasm-encoder/wit-component 0.258
c_adapter=$HOME/.local/share/ferry/wasi_snapshot_preview1.reactor.wasm
# sha256 of the reactor adapter of wasmtime 48.0.8 (the host's wasmtime).
c_adapter_sha256=134b86dc09c6b62077f2307b96fa8b83b94dc86737bc705ac3dbe27cb107b1f9

if command -v apt-get >/dev/null; then
    # libclang-rt-dev-wasm32: compiler-rt builtins, which clang links into
    # every wasm32 module (wasi-libc's printf needs them).
    apt_install clang lld wasi-libc libclang-rt-dev-wasm32
fi

# Whether `cargo install` installed CRATE at VERSION with FEATURE (or with
# the default features, which include it).
c_cargo_installed() {
    local crate=$1 version=$2 binary=$3 feature=$4
    [ -x "$HOME/.cargo/bin/$binary" ] || return 1
    python3 - "$crate $version " "$feature" <<'PY' 2>/dev/null
import json, os, sys
prefix, feature = sys.argv[1], sys.argv[2]
installs = json.load(open(os.path.expanduser("~/.cargo/.crates2.json")))["installs"]
ok = any(key.startswith(prefix)
         and (not value.get("no_default_features") or feature in value.get("features", []))
         for key, value in installs.items())
sys.exit(0 if ok else 1)
PY
}

# Both crates share most dependencies (wit-parser, wit-component, clap):
# one target directory lets the second build reuse the first's.
c_target_dir=$(mktemp -d)
if ! c_cargo_installed wit-bindgen-cli "$c_wit_bindgen_version" wit-bindgen c; then
    step "building wit-bindgen $c_wit_bindgen_version (C bindings for plugins; about 2 minutes)"
    cargo install wit-bindgen-cli --locked --version "$c_wit_bindgen_version" \
        --no-default-features --features c --target-dir "$c_target_dir" --force
fi
if ! c_cargo_installed wasm-tools "$c_wasm_tools_version" wasm-tools component; then
    step "building wasm-tools $c_wasm_tools_version (turns C plugins into components; about 2 minutes)"
    cargo install wasm-tools --locked --version "$c_wasm_tools_version" \
        --no-default-features --features component --target-dir "$c_target_dir" --force
fi

if ! echo "$c_adapter_sha256  $c_adapter" | sha256sum --check --status 2>/dev/null; then
    step "writing the WASI preview1 adapter to $c_adapter"
    cargo run --quiet --locked --release \
        --manifest-path plugins/kessel-outbox/c/wasi-adapter/Cargo.toml \
        --target-dir "$c_target_dir" -- "$c_adapter"
fi
rm -rf "$c_target_dir"
