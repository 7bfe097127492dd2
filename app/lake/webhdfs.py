"""The two WebHDFS calls a lake write needs, made directly over one HTTP session.

Reads, listings and deletes go through fsspec's WebHDFS (wrapped for pyarrow). Writes do not:
fsspec's file object creates an empty file, then appends the data to it (a redirect each), and
never reads the answer of RENAME, so the lake had to ask for the file again afterwards: six round
trips a file, each a request the namenode serves and Python prepares. Here a file is two (CREATE,
redirected to a datanode that takes the data) and its rename one, whose answer says whether it
happened. The sink writes a file per greenhouse-day of every chunk, so this is most of its
traffic to HDFS.
"""

from __future__ import annotations

from urllib.parse import quote

import requests


class WebHdfsError(OSError):
    """A WebHDFS call failed; the message is the server's (never a credential)."""


_EXCEPTIONS: dict[str, type[OSError]] = {
    "FileNotFoundException": FileNotFoundError,
    "AccessControlException": PermissionError,
    "SecurityException": PermissionError,
    "FileAlreadyExistsException": FileExistsError,
}
_TIMEOUT_S = 60.0


class WebHdfsFiles:
    """CREATE and RENAME on one namenode as ``user`` (simple authentication, as the lake's URL)."""

    def __init__(self, host: str, port: int, user: str) -> None:
        self._base = f"http://{host}:{port}/webhdfs/v1"
        self._user = user
        self._session = requests.Session()
        # requests reads the proxy variables of the environment on every request (walking all of
        # os.environ): read them once instead, with the same outcome.
        self._session.proxies = requests.utils.get_environ_proxies(self._base)
        self._session.trust_env = False

    def create(self, path: str, data: bytes) -> None:
        """Write a new file at ``path`` (absolute; parents are made) holding ``data``; an existing
        file is an error (:class:`FileExistsError`)."""
        where = self._call("put", path, "CREATE", overwrite="false", expect=307, allow_redirects=False)
        answer = self._session.put(where.headers["Location"], data=data, timeout=_TIMEOUT_S)
        _raise_for(answer, 201, f"CREATE {path}")

    def rename(self, source: str, destination: str) -> bool:
        """Move ``source`` to ``destination`` (both absolute); False when HDFS did not (the source
        is gone, the destination exists or its directory does not)."""
        return bool(self._call("put", source, "RENAME", destination=destination, expect=200).json()["boolean"])

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, path: str, op: str, *, expect: int, allow_redirects: bool = True, **params: str) -> requests.Response:
        url = self._base + quote(path, safe="/=")
        answer = self._session.request(method, url, params={"op": op, "user.name": self._user, **params}, allow_redirects=allow_redirects, timeout=_TIMEOUT_S)
        _raise_for(answer, expect, f"{op} {path}")
        return answer


def _raise_for(answer: requests.Response, expect: int, what: str) -> None:
    """Raise the OSError the server's RemoteException names unless the status is ``expect``."""
    if answer.status_code == expect:
        return
    try:
        remote = answer.json()["RemoteException"]
        kind, message = _EXCEPTIONS.get(remote.get("exception", ""), WebHdfsError), remote.get("message", "")
    except (ValueError, KeyError, TypeError):
        kind, message = WebHdfsError, answer.reason
    raise kind(f"WebHDFS {what}: HTTP {answer.status_code}: {message}")
