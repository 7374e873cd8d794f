#!/usr/bin/env bash
# Downloads (does not install) the Debian packages the build needs into .deps/, for a GPU machine
# without a package registry: pass .deps in the device tool's `carry` (or copy it along) and
# scripts/gpu-check.sh unpacks them with dpkg -x into .deps/prefix. About 17 MB, plus 30 MB of
# Fashion-MNIST when its Debian package is installed (gpu-check trains on it).
# matio's HDF5 pulls in libcurl4 and its libraries (libldap, libunistring: an H100 machine lacked them),
# carried in case the GPU machine lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps
cd .deps
apt-get download libfmt-dev libfmt9 libgtest-dev libopenblas-openmp-dev libopenblas0-openmp libgfortran5 \
  libquadmath0 libgomp1 libcli11-dev nlohmann-json3-dev libmatio-dev libmatio11 libhdf5-103-1 libsz2 libaec0 \
  libcurl4 libnghttp2-14 librtmp1 libssh2-1 libpsl5 libunistring2 libldap-2.5-0 libsasl2-2 libsasl2-modules-db libdb5.3 \
  libjpeg62-turbo-dev libjpeg62-turbo zlib1g-dev
ls -1 "$PWD"/*.deb | wc -l | xargs echo "fetch-gpu-deps: .deb files in .deps:"
# Fashion-MNIST (30 MB) for gpu-check's full-schedule main-job run.
if [[ -d /usr/share/datasets/fashion-mnist ]]; then
  mkdir -p fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz fashion-mnist/
  echo "fetch-gpu-deps: Fashion-MNIST copied to .deps/fashion-mnist"
fi
