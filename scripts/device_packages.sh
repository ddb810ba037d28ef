#!/usr/bin/env bash
# Packs what a GPU machine of the device checks lacks for main.py, envs.generate and scripts.sweep into one archive
# that a device call can carry (at most 64 MiB a call): .devcarry/site.tar.xz, about 20 MB.
#
#   bash scripts/device_packages.sh            # here, in the repository root, where pip reaches a registry
#
# On the device, in the call's command (carry=[".devcarry"]):
#
#   mkdir -p /tmp/site && tar -xJf .devcarry/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site
#
# The image already has jax (CUDA), flax, optax, orbax-checkpoint, numpy, absl-py, matplotlib and tqdm. The wheels
# here are for its python (3.12, x86-64), at requirements.txt's pins. dm_control's wheel alone is 56 MB, so the
# parts OGBench's environments never import are left out: dm_control's locomotion, suite and blender packages
# (about 105 MB installed) and MuJoCo's studio viewer; tests/test_envs_generate.py checks that the environments make
# and step without them.
set -euo pipefail

python_version="${PYTHON_VERSION:-3.12}"
out_dir=".devcarry"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

pin() { grep -E "^$1==" requirements.txt | sed 's/[[:space:]]*#.*//'; }
packages=(
  "$(pin ml-collections)" "$(pin ogbench)" "$(pin mujoco)" "mujoco-core==$(pin mujoco | cut -d= -f3)"
  "$(pin gymnasium)" "$(pin tensorboardX)" "$(pin submitit)"
  # OGBench's and MuJoCo's own needs, at the versions this project's environment resolved.
  dm-control==1.0.50 dm-env==1.6 dm-tree==0.1.10 pyopengl==3.1.10 glfw==2.11.0 farama-notifications==0.0.6
)
for package in "${packages[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$work/wheels" "$package"
done

mkdir -p "$work/site"
for wheel in "$work"/wheels/*.whl; do
  python3 -m zipfile -e "$wheel" "$work/site"
done
rm -rf "$work/site/dm_control/locomotion" "$work/site/dm_control/suite" "$work/site/dm_control/blender" \
  "$work/site/mujoco/studio"

mkdir -p "$out_dir"
tar -cJf "$out_dir/site.tar.xz.tmp" -C "$work/site" .
mv "$out_dir/site.tar.xz.tmp" "$out_dir/site.tar.xz"
echo "wrote $out_dir/site.tar.xz ($(du -h "$out_dir/site.tar.xz" | cut -f1)); add /.devcarry/ to .git/info/exclude"
