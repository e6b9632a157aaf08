# The Pennsieve app (app.yml): `nwb2pennsieve run` with the reference processor's environment
# contract: INPUT_DIR, OUTPUT_DIR, ENVIRONMENT and the API hosts from the runner; SESSION_TOKEN
# (+ REFRESH_TOKEN) or PENNSIEVE_API_KEY/PENNSIEVE_API_SECRET and INTEGRATION_ID at run time; the
# parameters of app.yml as variables. Built by `make image`, from wheels made on the host
# (build/image/wheels: the package and its dependencies), so the build needs no network.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

COPY build/image/wheels /tmp/wheels
RUN python3.12 -m pip install --no-cache-dir --no-index --find-links /tmp/wheels "nwb2pennsieve[local]" \
    && rm -rf /tmp/wheels

# pynwb/h5py caches; no bytecode written next to the installed code at run time.
ENV XDG_CACHE_HOME=/tmp/.cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Root, as the reference's image: the runner's INPUT_DIR and OUTPUT_DIR mounts decide ownership.
WORKDIR /work
ENTRYPOINT ["nwb2pennsieve", "run"]
