# tansu, a Kafka-compatible broker written in Rust, for the Kafka tests
# (Apache Kafka cannot be fetched here). Built once with cargo into
# ~/.cargo/bin (about 16 minutes on two cores), with the `dynostore`
# feature: its in-memory storage, which the tests use. Kept when the
# installed one is this version with that feature.

tansu_installed() {
    [ -x "$HOME/.cargo/bin/tansu" ] || return 1
    python3 - <<'PY' 2>/dev/null
import json, os, sys
installs = json.load(open(os.path.expanduser("~/.cargo/.crates2.json")))["installs"]
ok = any(key.startswith("tansu 0.6.0 ") and "dynostore" in value.get("features", [])
         for key, value in installs.items())
sys.exit(0 if ok else 1)
PY
}

if ! tansu_installed; then
    step "building tansu 0.6.0 (a Kafka-compatible broker for the tests; about 16 minutes)"
    cargo install tansu --locked --version 0.6.0 --features dynostore --force
fi
