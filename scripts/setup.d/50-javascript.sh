# The JavaScript plugin toolchain (plugins/kessel-outbox/js): Node.js and
# npm (from Debian when missing), and componentize-js at the versions the
# example's package-lock.json pins, in that folder's node_modules, so that
# its build (and the tests that run it) does not pay the install.

if ! command -v npm >/dev/null && command -v apt-get >/dev/null; then
    apt_install nodejs npm
fi

# componentize-js's dependencies (oxc-parser among them) declare Node.js 20
# or later; Debian 12 ships 18.
node_major=$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/')
if [ "${node_major:-0}" -lt 20 ]; then
    step "warning: Node.js ${node_major:-(missing)} found; JavaScript plugins need Node.js 20 or later (Debian 13, or NodeSource's packages on Debian 12)"
fi

js_example=plugins/kessel-outbox/js
if [ ! -d "$js_example/node_modules/@bytecodealliance/componentize-js" ] \
    || [ "$js_example/package-lock.json" -nt "$js_example/node_modules/.package-lock.json" ]; then
    step "installing componentize-js for the JavaScript example plugin"
    (cd "$js_example" && npm ci --no-audit --no-fund --loglevel=error)
fi
