#!/usr/bin/env bash
# Builds the real kube-apiserver, kube-controller-manager and etcd from source (Go module proxy only) for the end-to-end
# tests, and caches them under target/e2e/bin so a re-run on the same machine is quick.
#
#   tests/e2e/build-binaries.sh          # build what is missing, print the bin directory
#
# Versions live here, in one place.
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v4.3.2}"

root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${root}/target/e2e"
bin="${out}/bin"
mkdir -p "${bin}"
# The machine's own Go builds everything; never fetch another toolchain.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0
# Go's module and build caches for these builds (about 5 GB) live beside the binaries and are
# removed once every binary is built: the cached binaries are all a re-run needs, and the space
# is the tests' (a CI machine's disk can be nearly full). An interrupted build keeps them.
export GOMODCACHE="${out}/go/mod" GOCACHE="${out}/go/build"

stamp_ok() { [[ -x "${bin}/$1" && -f "${bin}/$1.version" && "$(cat "${bin}/$1.version")" == "$2" ]]; }

# kube-apiserver, and kube-controller-manager so Deployments, ReplicaSets and garbage collection
# are real in the reconciler tests. Both come from one module of k8s.io/kubernetes.
kube_module() {
  local mod="${out}/kube-module"
  if [[ -f "${mod}/go.sum" && "$(cat "${mod}/version" 2>/dev/null)" == "${KUBERNETES_VERSION}" ]]; then
    echo "${mod}"; return
  fi
  rm -rf "${mod}" && mkdir -p "${mod}"
  local staging_minor="v0.${KUBERNETES_VERSION#v1.}"
  # k8s.io/kubernetes points its k8s.io/* staging modules at ./staging; a consumer module has to
  # replace each with the published v0.x release of the same minor/patch.
  local upstream_mod
  upstream_mod="$(cd "${mod}" && go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module tollgate.test/kube"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes ${KUBERNETES_VERSION}"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "${upstream_mod}" |
      awk -v v="${staging_minor}" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "${mod}/go.mod"
  cat > "${mod}/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  (cd "${mod}" && go mod tidy >&2)
  echo "${KUBERNETES_VERSION}" > "${mod}/version"
  echo "${mod}"
}

build_kube_binary() {
  local name="$1"
  if stamp_ok "${name}" "${KUBERNETES_VERSION}+stamped"; then return; fi
  local mod
  mod="$(kube_module)"
  # Stamp the real version: the apiserver derives its emulation/compatibility version from it.
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local pkg="k8s.io/component-base/version"
  local ldflags="-s -w -X ${pkg}.gitVersion=${KUBERNETES_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
  (cd "${mod}" && go build -ldflags "${ldflags}" -o "${bin}/${name}" "k8s.io/kubernetes/cmd/${name}")
  echo "${KUBERNETES_VERSION}+stamped" > "${bin}/${name}.version"
}

# A fresh module NAME requiring MODULE VERSION; prints its directory.
new_module() {
  local mod="${out}/$1-module"
  rm -rf "${mod}" && mkdir -p "${mod}"
  printf 'module tollgate.test/%s\n\ngo 1.26.0\n\nrequire %s\n' "$1" "$2" > "${mod}/go.mod"
  echo "${mod}"
}

build_etcd() {
  if stamp_ok etcd "${ETCD_VERSION}"; then return; fi
  local mod
  mod="$(new_module etcd "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}")"
  cat > "${mod}/main.go" <<'GO'
// etcd's own main is a thin wrapper around etcdmain; this is the same wrapper.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "${mod}" && go mod tidy && go build -ldflags "-s -w" -o "${bin}/etcd" .)
  echo "${ETCD_VERSION}" > "${bin}/etcd.version"
}

# helm, for the chart tests (lint, template, and a server-side dry run of what it renders).
build_helm() {
  if stamp_ok helm "${HELM_VERSION}"; then return; fi
  local mod
  mod="$(new_module helm "helm.sh/helm/v4 ${HELM_VERSION}")"
  cat > "${mod}/tools.go" <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v4/cmd/helm"
GO
  # helm prints the version it was stamped with (`helm version`).
  local ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
  (cd "${mod}" && go mod tidy && go build -ldflags "${ldflags}" -o "${bin}/helm" helm.sh/helm/v4/cmd/helm)
  echo "${HELM_VERSION}" > "${bin}/helm.version"
}

started=$(date +%s)
build_etcd
build_helm
build_kube_binary kube-apiserver
build_kube_binary kube-controller-manager
if [[ -d "${out}/go" ]]; then
  go clean -cache -modcache
  rm -rf "${out}/go"
fi
echo "e2e binaries ready in ${bin} ($(( $(date +%s) - started ))s)" >&2
echo "${bin}"
