#!/usr/bin/env bash
# Installs LLVM 19 (Debian's llvm-19-dev), which the LLVM backend builds against, unless it is
# already there. `.cargo/config.toml` points llvm-sys at /usr/lib/llvm-19.
set -euo pipefail
if [ -x /usr/lib/llvm-19/bin/llvm-config ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "installing llvm-19-dev (the LLVM backend builds against it)"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q llvm-19-dev
