"""Creates N GardenArtifacts (one inline file, one tag each) through the API server, with
THREADS keep-alive connections: kubectl (one process per file, client-side pacing) would take
minutes for 20,000 objects and its YAML parsing would compete for the same 2 cores.

usage: create_objects.py URL CA_FILE TOKEN_FILE NAMESPACE REGISTRY N INTERVAL THREADS
Prints the seconds from the first request to the last answer.
"""

import http.client
import json
import ssl
import sys
import threading
import time
import urllib.parse


def main():
    url, ca_file, token_file, namespace, registry, n, interval, threads = sys.argv[1:]
    n, threads = int(n), int(threads)
    parsed = urllib.parse.urlsplit(url)
    token = open(token_file).read().strip()
    context = ssl.create_default_context(cafile=ca_file)
    path = f"/apis/oci.gardenlinux.io/v1alpha1/namespaces/{namespace}/gardenartifacts"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    failures = []

    def body(i):
        spec = {
            "repository": f"{registry}/bench/scale",
            "tags": [f"{i:05d}"],
            "source": {"files": [{
                "name": f"notes-{i:05d}.txt",
                "mediaType": "text/plain",
                "content": f"artefact {i:05d}\n",
            }]},
        }
        if interval:
            spec["interval"] = interval
        return json.dumps({
            "apiVersion": "oci.gardenlinux.io/v1alpha1",
            "kind": "GardenArtifact",
            "metadata": {"name": f"scale-{i:05d}", "namespace": namespace},
            "spec": spec,
        })

    def worker(first):
        connection = http.client.HTTPSConnection(parsed.hostname, parsed.port, context=context)
        for i in range(first, n + 1, threads):
            for attempt in range(5):
                try:
                    connection.request("POST", path, body(i), headers)
                    answer = connection.getresponse()
                    text = answer.read()
                    if answer.status in (200, 201, 409):
                        break
                    if answer.status == 429 or answer.status >= 500:
                        time.sleep(0.5 * (attempt + 1))
                        continue
                    failures.append(f"scale-{i:05d}: {answer.status} {text[:200]!r}")
                    break
                except (http.client.HTTPException, OSError):
                    connection.close()
                    connection = http.client.HTTPSConnection(
                        parsed.hostname, parsed.port, context=context)
                    time.sleep(0.5)
            else:
                failures.append(f"scale-{i:05d}: no answer after 5 attempts")

    start = time.monotonic()
    workers = [threading.Thread(target=worker, args=(t + 1,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(f"{time.monotonic() - start:.3f}")
    if failures:
        print("\n".join(failures[:20]), file=sys.stderr)
        sys.exit(1)


main()
