#!/bin/sh
# Run last in each dependency stage of docker/Dockerfile: cuts from the venv what no service uses
# at run time. `make images-test` runs every service from the images this leaves.
set -eu
SITE=/opt/venv/lib/python3.11/site-packages
# No image installs anything at run time, and no service imports pip or setuptools.
python -m pip uninstall -q -y pip setuptools
# Test suites shipped inside packages (numpy, sympy, networkx...): never imported by a service.
find "$SITE" -type d -name tests -prune -exec rm -rf {} +
# botocore's models of every AWS service (about 28 MB): the storage service talks S3 only, and STS
# where AWS credentials come from a role.
if [ -d "$SITE/botocore/data" ]; then
  find "$SITE/botocore/data" -mindepth 1 -maxdepth 1 -type d ! -name s3 ! -name sts -exec rm -rf {} +
fi
# torch's C++ headers and static libraries serve only to compile extensions.
if [ -d "$SITE/torch" ]; then
  rm -rf "$SITE/torch/include"
  find "$SITE/torch" -name '*.a' -delete
fi
