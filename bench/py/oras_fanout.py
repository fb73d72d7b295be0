"""Push the fan-out artefacts the way a typical script does with the ORAS Python SDK: one
process, one artefact after the other. For each: client.push() to the first tag (it HEADs each
blob and uploads the missing ones with POST + PUT, then PUTs the manifest), then the manifest
fetched once and PUT under the second tag (oras-py has no tag call).

usage: oras_fanout.py ORAS_JSON REGISTRY     (ORAS_JSON from bench_make_fanout in bench/lib.sh)
"""

import json
import os
import sys

import oras.client


def main() -> None:
    spec_path, registry = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    os.chdir(os.path.dirname(os.path.abspath(spec_path)))
    repo = spec["repo"]
    client = oras.client.OrasClient(hostname=registry, insecure=True)
    for artefact in spec["artefacts"]:
        first, *others = artefact["tags"]
        target = f"{registry}/{repo}:{first}"
        files = [f"{path}:application/octet-stream" for path in artefact["files"]]
        response = client.push(
            target=target, files=files, disable_path_validation=True, quiet=True
        )
        if response.status_code != 201:
            sys.exit(f"push {target} answered {response.status_code}")
        if others:
            manifest = client.get_manifest(target)
            for tag in others:
                container = client.get_container(f"{registry}/{repo}:{tag}")
                response = client.upload_manifest(manifest, container)
                if response.status_code != 201:
                    sys.exit(f"manifest PUT {repo}:{tag} answered {response.status_code}")


if __name__ == "__main__":
    main()
