"""What `cargo bench --bench drain` compares enrolld's uploads with: a script
on Tencent Cloud's official Python SDK (tencentcloud-sdk-python-iai, from
PyPI; scripts/setup-bench installs it in target/bench-data/venv) that sends
each crop as `CreatePerson` to the same emulator, on one keep-alive TLS
connection, reading each file and encoding it as it goes.

    python tencent_sdk.py HOST:PORT CA_PEM SECRET_ID SECRET_FILE GROUP IMAGE...

Prints one JSON line: uploads, wall seconds and this process's CPU seconds
(user + system, getrusage: microseconds) for the uploads, after start-up (imports, client).
"""

import base64
import json
import resource
import sys
import time

from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.iai.v20180301 import iai_client, models


def main():
    endpoint, ca, secret_id, secret_file, group, *images = sys.argv[1:]
    with open(secret_file) as f:
        secret_key = f.read().strip()
    http = HttpProfile(endpoint=endpoint, keepAlive=True, certification=ca)
    client = iai_client.IaiClient(
        credential.Credential(secret_id, secret_key), "", ClientProfile(httpProfile=http)
    )
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    for i, path in enumerate(images):
        with open(path, "rb") as f:
            image = base64.b64encode(f.read()).decode()
        req = models.CreatePersonRequest()
        req.GroupId = group
        req.PersonId = "sdk-%d" % i
        req.PersonName = "sdk-%d" % i
        req.Image = image
        client.CreatePerson(req)
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    user = cpu1.ru_utime - cpu0.ru_utime
    system = cpu1.ru_stime - cpu0.ru_stime
    print(json.dumps({
        "uploads": len(images), "wall_s": wall1 - wall0, "cpu_s": user + system,
        "user_s": user, "system_s": system,
    }))


if __name__ == "__main__":
    main()
