#!/usr/bin/env python3
"""Reads a component version back with Gardener's OCM library (`gardener-ocm` from PyPI), the
way Gardener's delivery tooling finds a release, and prints what it read as JSON for
tests/ocm.rs to check.

    ocm_read.py OCM_REPOSITORY COMPONENT_NAME VERSION

OCM_REPOSITORY is `host:port/path` of a plain-HTTP registry. The lookup is the package's own
(`ocm.retrieve.oci_component_descriptor_lookup`: manifest, config, descriptor layer, tar,
parse); the raw descriptor is also validated against the v2 JSON schema the package ships.
"""

import dataclasses
import io
import json
import sys
import tarfile

import jsonschema
import requests
import yaml

import oci.client
import ocm
import ocm.oci
import ocm.retrieve


class PlainHttp(requests.Session):
    """The test registry speaks plain HTTP; the package asks https:// of every registry (its
    authentication probe does not go through its routes), so its requests to `host` are sent
    as http://."""

    def __init__(self, host):
        super().__init__()
        self.prefix = f'https://{host}/'

    def request(self, method, url, *args, **kwargs):
        if url.startswith(self.prefix):
            url = 'http://' + url[len('https://'):]
        return super().request(method, url, *args, **kwargs)


def main():
    repository, name, version = sys.argv[1:4]
    host = repository.split('/', 1)[0]
    client = oci.client.Client(session=PlainHttp(host), max_retries=0)
    lookup = ocm.retrieve.oci_component_descriptor_lookup(
        ocm_repository_lookup=ocm.retrieve.ocm_repository_lookup(repository),
        oci_client=client,
    )
    descriptor = lookup(ocm.ComponentIdentity(name=name, version=version), absent_ok=False)
    component = descriptor.component

    # What is stored, byte for byte: the manifest, its config, and the tar's one member.
    target = f'{repository}/component-descriptors/{name.lower()}:{version}'
    manifest = client.manifest(image_reference=target)
    config = json.loads(client.blob(image_reference=target, digest=manifest.config.digest).text)
    layer = manifest.layers[0]
    blob = client.blob(image_reference=target, digest=layer.digest, stream=False).content
    with tarfile.open(fileobj=io.BytesIO(blob), mode='r') as tar:
        members = tar.getnames()
        raw = yaml.safe_load(tar.extractfile(ocm.oci.component_descriptor_fname).read())

    # The schema file the package ships (its own validation reads the same file).
    with open(ocm.default_json_schema_path) as f:
        schema = yaml.safe_load(f)
    errors = []
    for what, document in (
        ('stored', raw),
        # As the package validates a component it looked up.
        ('parsed', json.loads(json.dumps(dataclasses.asdict(descriptor), cls=ocm.EnumJSONEncoder))),
    ):
        try:
            jsonschema.validate(instance=document, schema=schema)
        except jsonschema.ValidationError as e:
            errors.append(f'{what}: {e.message} at {list(e.absolute_path)}')

    print(json.dumps({
        'name': component.name,
        'version': component.version,
        'provider': component.provider,
        'repositoryContexts': [dataclasses.asdict(c) for c in component.repositoryContexts],
        'componentReferences': [
            {'name': r.name, 'componentName': r.componentName, 'version': r.version}
            for r in component.componentReferences
        ],
        'resources': [
            {
                'name': r.name,
                'version': r.version,
                'type': str(r.type),
                'extraIdentity': r.extraIdentity,
                'imageReference': r.access.imageReference,
                'digest': r.digest.value if r.digest else None,
                'labels': {label.name: label.value for label in r.labels},
            }
            for r in component.resources
        ],
        'schemaErrors': errors,
        'configMediaType': manifest.config.mediaType,
        'layerMediaType': layer.mediaType,
        'configLayerMediaType': config['componentDescriptorLayer']['mediaType'],
        'tarMembers': members,
        'annotations': manifest.annotations,
    }))


if __name__ == '__main__':
    main()
