# WhaleMountain's own images: the static wm binary on a small base.
#
# By default, the image GitLab CI runs `wm validate` in
# (templates/gitlab-ci): wm on a busybox base with a shell. Build it with
# `make image`, which builds bin/wm first; BASE defaults to a public
# busybox, and `make image` uses a busybox base made locally from Debian's
# busybox-static when there is no network.
#
# With a Debian BASE and PACKAGES, the server image `wm serve` runs in
# (deploy/kubernetes): SIF builds run squashfs-tools-ng's tar2sqfs, and GitLab,
# the registry and the apiserver are reached over HTTPS, which needs the CA
# certificates:
#
#   make build
#   docker build --build-arg BASE=debian:bookworm-slim \
#     --build-arg PACKAGES="ca-certificates squashfs-tools-ng" \
#     -t whalemountain/wm-server:$(git describe --tags --always) .
#
# That build fetches the Debian base and packages, so it needs the network.
ARG BASE=busybox:1.37-musl
FROM ${BASE}
# Debian packages to add with apt-get (which the busybox base has not);
# none by default.
ARG PACKAGES=
RUN if [ -n "$PACKAGES" ]; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY bin/wm /usr/local/bin/wm
USER 65534:65534
WORKDIR /work
CMD ["wm", "--help"]
