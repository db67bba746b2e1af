#!/usr/bin/env bash
# Install a one-node SLURM test cluster's packages (Debian/Ubuntu, as root): slurm-wlm (slurmctld,
# slurmd, sbatch, squeue, sinfo) and munge. tests/slurm_cluster.py starts and stops the daemons
# itself in a temporary folder, so nothing is enabled or started here. Safe to run twice.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then
  echo "install-slurm: slurm-wlm and munge already installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-slurm: needs root (apt-get); the SLURM test will be skipped" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-slurm: no apt-get here; the SLURM test will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq slurm-wlm munge >/dev/null
echo "install-slurm: $(slurmctld -V), $(munged --version 2>&1 | head -1)"
