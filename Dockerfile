# WhaleMountain's own image: the static wm binary on a small base with a
# shell, so GitLab CI can run `wm validate` in it (templates/gitlab-ci).
# Build it with `make image`, which builds bin/wm first; BASE defaults to a
# public busybox, and `make image` uses a busybox base made locally from
# Debian's busybox-static when there is no network.
ARG BASE=busybox:1.37-musl
FROM ${BASE}
COPY bin/wm /usr/local/bin/wm
USER 65534:65534
WORKDIR /work
CMD ["wm", "--help"]
