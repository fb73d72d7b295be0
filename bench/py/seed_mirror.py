"""Seed the source repository of bench/mirror.sh straight over the registry API (stdlib only,
monolithic blob uploads: POST + PUT, a few threads with kept-alive connections), which is much
faster than one CLI process per tag.

Real images, so that skopeo copies them as it copies images: each layer a gzipped tar of one
random 2 KiB file, an OCI image config whose diff_ids match, OCI image manifests.

  releases  REL_COUNT tags 1877.0 .. 1877.(REL_COUNT-1)   (what the mirror selects)
  nightlies NIGHTLY_COUNT tags nightly-000 ..             (what it leaves)

Tag number i (over both groups, 0-based):
  - i % 10 == 3: an OCI image index over two platform manifests (linux/amd64, linux/arm64),
    pushed untagged, each with two layers of its own;
  - i % 5 == 0 (20 % of the tags): the first layer is one blob shared by all of them;
  - otherwise: one manifest, two layers of its own.

usage: seed_mirror.py REGISTRY REPO REL_COUNT NIGHTLY_COUNT
       seed_mirror.py REGISTRY REPO --one TAG        (one more plain two-layer image)
Prints a JSON summary (tags, manifests, blobs pushed) on stdout.
"""

import concurrent.futures
import gzip
import hashlib
import http.client
import io
import json
import os
import sys
import tarfile
import threading

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

_local = threading.local()
_counts_lock = threading.Lock()
counts = {"blobs": 0, "manifests": 0, "tags": 0}


def connection(registry: str) -> http.client.HTTPConnection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = http.client.HTTPConnection(registry, timeout=60)
        _local.conn = conn
    return conn


def request(registry: str, method: str, url: str, body: bytes = b"", headers=None):
    conn = connection(registry)
    for attempt in (1, 2):
        try:
            conn.request(method, url, body=body or None, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return response.status, response.headers, data
        except (http.client.HTTPException, ConnectionError):
            # A kept-alive connection the registry closed: reconnect once.
            conn.close()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(registry: str, repo: str, data: bytes) -> dict:
    digest = sha256(data)
    status, headers, _ = request(registry, "POST", f"/v2/{repo}/blobs/uploads/")
    if status != 202:
        sys.exit(f"POST upload in {repo}: {status}")
    location = headers["Location"]
    if location.startswith("http"):
        location = "/" + location.split("/", 3)[3]
    sep = "&" if "?" in location else "?"
    status, _, body = request(
        registry,
        "PUT",
        f"{location}{sep}digest={digest}",
        data,
        {"Content-Type": "application/octet-stream"},
    )
    if status != 201:
        sys.exit(f"PUT blob {digest} in {repo}: {status} {body[:200]!r}")
    with _counts_lock:
        counts["blobs"] += 1
    return {"digest": digest, "size": len(data)}


def push_manifest(registry: str, repo: str, ref: str, media_type: str, doc: dict) -> dict:
    data = json.dumps(doc, separators=(",", ":")).encode()
    status, _, body = request(
        registry, "PUT", f"/v2/{repo}/manifests/{ref}", data, {"Content-Type": media_type}
    )
    if status != 201:
        sys.exit(f"PUT manifest {repo}:{ref}: {status} {body[:200]!r}")
    with _counts_lock:
        counts["manifests"] += 1
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}


def layer(name: str) -> tuple[bytes, str]:
    """A gzipped tar of one random file, and the diff_id (digest of the tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        content = os.urandom(2048)
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha256(tar_bytes)


def image(registry: str, repo: str, label: str, arch: str, shared, tag=None) -> dict:
    """Pushes the blobs and the manifest (under TAG, or untagged: by digest); returns its
    descriptor."""
    layers = [shared if shared is not None else layer(f"{label}-{arch}-a")]
    layers.append(layer(f"{label}-{arch}-b"))
    descriptors = []
    for blob, _ in layers:
        if shared is not None and blob is shared[0]:
            descriptors.append({"mediaType": OCI_LAYER, "digest": sha256(blob), "size": len(blob)})
        else:
            descriptors.append({"mediaType": OCI_LAYER, **push_blob(registry, repo, blob)})
    config = json.dumps(
        {
            "created": "2026-11-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"bench": label}},
            "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
        },
        separators=(",", ":"),
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **push_blob(registry, repo, config)},
        "layers": descriptors,
    }
    ref = tag or sha256(json.dumps(manifest, separators=(",", ":")).encode())
    return push_manifest(registry, repo, ref, OCI_MANIFEST, manifest)


def tagged(registry: str, repo: str, i: int, tag: str, shared) -> str:
    share = shared if i % 5 == 0 else None
    if i % 10 == 3:
        children = []
        for arch in ("amd64", "arm64"):
            child = image(registry, repo, tag, arch, share)
            children.append({**child, "platform": {"architecture": arch, "os": "linux"}})
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
        push_manifest(registry, repo, tag, OCI_INDEX, index)
        kind = "index"
    else:
        image(registry, repo, tag, "amd64", share, tag)
        kind = "image"
    with _counts_lock:
        counts["tags"] += 1
    return kind


def main() -> None:
    registry, repo = sys.argv[1], sys.argv[2]
    if sys.argv[3] == "--one":
        kind = tagged(registry, repo, 1, sys.argv[4], None)
        print(json.dumps({**counts, "kinds": {kind: 1}}))
        return
    releases, nightlies = int(sys.argv[3]), int(sys.argv[4])
    shared_blob = layer("shared")
    push_blob(registry, repo, shared_blob[0])
    names = [f"1877.{n}" for n in range(releases)] + [f"nightly-{n:03d}" for n in range(nightlies)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        kinds = list(pool.map(lambda it: tagged(registry, repo, it[0], it[1], shared_blob), enumerate(names)))
    selected = [k for k, name in zip(kinds, names) if not name.startswith("nightly-")]
    print(
        json.dumps(
            {
                **counts,
                "kinds": {k: kinds.count(k) for k in sorted(set(kinds))},
                "selected_kinds": {k: selected.count(k) for k in sorted(set(selected))},
                "sharing": sum(1 for i in range(len(names)) if i % 5 == 0),
            }
        )
    )


if __name__ == "__main__":
    main()
