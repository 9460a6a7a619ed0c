# podman and runc, for the container test (tests/integration/container.rs):
# it builds the image and runs it. Debian's packages; the test brings its
# own containers.conf (tests/container/), so nothing system-wide changes.

if command -v apt-get >/dev/null; then
    apt_install podman runc binutils
fi
