"""Copy an artefact from one registry to another with the ORAS Python SDK (oras-py).

oras-py has no copy API, so this is what a script does with it: pull (manifest, then each
layer into a temp dir, named by its title annotation), then push the files to the target with
their media types and the source's manifest annotations. The pushed manifest is rebuilt by
oras-py, so its digest differs from the source's (its config is oras-py's own
application/vnd.unknown.config.v1+json); the layer blobs are the same bytes. Notes on what the
SDK does, read from its source (0.2.x): pull streams each blob to disk in 8 KiB reads without
verifying its digest; push hashes each file, then HEADs the blob and uploads it with a POST
and one PUT whose body is the whole file read into memory (put_upload: fd.read()).

usage: oras_copy.py SRC_REF DST_REF WORKDIR
"""

import os
import sys

import oras.client


def main() -> None:
    src, dst, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
    client = oras.client.OrasClient(insecure=True)
    manifest = client.get_manifest(src)
    pulled = client.pull(target=src, outdir=workdir)
    media_types = {
        (layer.get("annotations") or {}).get("org.opencontainers.image.title"): layer["mediaType"]
        for layer in manifest["layers"]
    }
    os.chdir(workdir)
    files = []
    for path in pulled:
        name = os.path.basename(path)
        files.append(f"{name}:{media_types[name]}")
    response = client.push(
        target=dst,
        files=files,
        manifest_annotations=manifest.get("annotations") or None,
        disable_path_validation=True,
        quiet=True,
    )
    if response.status_code != 201:
        sys.exit(f"push answered {response.status_code}")


if __name__ == "__main__":
    main()
