#!/usr/bin/env bash
# Builds tollgate's OCI image from the release binary without pulling a base image: one layer
# holding the binary, exactly the shared libraries it loads (as ldd resolves them), the CA
# certificates, a passwd and group naming the non-root user 65532, and the example policies.
# Made with umoci (Debian package `umoci`); no registry or container engine is involved.
#
#   scripts/build-image.sh [OUT_DIR] [TAG]
#
# OUT_DIR (default target/image) receives `oci/`, an OCI image layout with TAG (default the
# crate version), and `tollgate-TAG.tar`, the same image as one archive: push it with
# `skopeo copy oci-archive:tollgate-TAG.tar docker://REGISTRY/tollgate:TAG`, or load it with
# `podman load -i tollgate-TAG.tar`. TOLLGATE_BINARY names another build of the binary (the
# tests use the debug one); by default the release binary is built first.
#
# The Dockerfile builds the same image for those with a registry to pull rust and distroless
# from; this script is what is built and started here (tests/image.rs).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-${root}/target/image}" && cd "${1:-${root}/target/image}" && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "${root}/Cargo.toml" | head -1)"
tag="${2:-${version}}"

command -v umoci >/dev/null || { echo "build-image: umoci is not installed (apt-get install umoci)" >&2; exit 2; }

binary="${TOLLGATE_BINARY:-}"
if [[ -z "${binary}" ]]; then
  (cd "${root}" && cargo build --release --bin tollgate >&2)
  binary="${root}/target/release/tollgate"
fi
[[ -x "${binary}" ]] || { echo "build-image: ${binary} is not an executable" >&2; exit 2; }

layout="${out}/oci"
bundle="${out}/bundle"
rm -rf "${layout}" "${bundle}"
umoci init --layout "${layout}"
umoci new --image "${layout}:${tag}"
umoci unpack --image "${layout}:${tag}" "${bundle}" >/dev/null
rootfs="${bundle}/rootfs"

# The binary and every library the dynamic loader resolves for it, at the paths it resolved
# them from, the loader itself included.
install -D -m 0755 "${binary}" "${rootfs}/usr/local/bin/tollgate"
libraries="$(ldd "${binary}" | awk '/=> \//{print $3} /^[ \t]*\/[^ ]*ld-linux/{print $1}')"
[[ -n "${libraries}" ]] || { echo "build-image: ldd found no libraries for ${binary}" >&2; exit 2; }
for library in ${libraries}; do
  install -D -m 0755 "$(readlink -f "${library}")" "${rootfs}${library}"
done

# CA certificates for an https:// trace collector; the webhook itself trusts only its own CA.
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "${rootfs}/etc/ssl/certs/ca-certificates.crt"
mkdir -p "${rootfs}/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  > "${rootfs}/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "${rootfs}/etc/group"
install -d -m 0755 -o 65532 -g 65532 "${rootfs}/home/nonroot"
install -d -m 1777 "${rootfs}/tmp"
# The example policies, where the entrypoint's default arguments look for them.
mkdir -p "${rootfs}/etc/tollgate"
cp -R "${root}/policies" "${rootfs}/etc/tollgate/policies"
find "${rootfs}/etc/tollgate/policies" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +
install -d -m 0755 -o 65532 -g 65532 "${rootfs}/etc/tollgate/certs"

umoci repack --image "${layout}:${tag}" "${bundle}" >/dev/null
umoci config --image "${layout}:${tag}" \
  --config.user 65532:65532 \
  --config.workingdir /home/nonroot \
  --config.env PATH=/usr/local/bin \
  --config.entrypoint /usr/local/bin/tollgate \
  --config.cmd serve --config.cmd --policies --config.cmd /etc/tollgate/policies \
  --config.cmd --cert-dir --config.cmd /etc/tollgate/certs \
  --config.cmd --log-format --config.cmd json \
  --config.exposedports 8443/tcp \
  --config.label "org.opencontainers.image.title=tollgate" \
  --config.label "org.opencontainers.image.version=${version}" \
  --author tollgate
umoci gc --layout "${layout}"
rm -rf "${bundle}"

archive="${out}/tollgate-${tag}.tar"
tar -C "${layout}" -cf "${archive}" .
echo "image ${layout}:${tag} ($(du -sh "${layout}" | cut -f1) compressed; archive ${archive})" >&2
echo "${layout}:${tag}"
