# The Python plugin toolchain (plugins/kessel-outbox/python): python3 with
# venv from Debian, and componentize-py at the version the example pins, in
# a virtualenv at target/toolchains/python (its build script uses it; so do
# the tests of the Python scaffold, through COMPONENTIZE_PY).

if command -v apt-get >/dev/null; then
    apt_install python3 python3-venv python3-pip
fi

python_venv=target/toolchains/python
python_pin=$(cat plugins/kessel-outbox/python/requirements.txt)
if ! "$python_venv/bin/pip" freeze 2>/dev/null | grep -qxF "$python_pin"; then
    step "installing $python_pin into $python_venv"
    python3 -m venv "$python_venv"
    "$python_venv/bin/pip" install --quiet --disable-pip-version-check -r plugins/kessel-outbox/python/requirements.txt
fi
