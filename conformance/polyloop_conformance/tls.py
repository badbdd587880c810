"""Test certificates from ``trustme``: one CA, one server certificate for localhost.

Cross-process runs share them through a folder (``ca.pem``, ``server.pem``), so that
a client on one backend verifies a server on another.
"""

from __future__ import annotations

import functools
import os
import ssl

import trustme

__all__ = ["TLSMaterial", "material"]


class TLSMaterial:
    """A CA and a server certificate valid for ``localhost``, ``127.0.0.1`` and ``::1``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.ca_path = os.path.join(folder, "ca.pem")
        self.server_path = os.path.join(folder, "server.pem")
        if not (os.path.exists(self.ca_path) and os.path.exists(self.server_path)):
            ca = trustme.CA()
            cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
            ca.cert_pem.write_to_path(self.ca_path)
            tmp = self.server_path + f".{os.getpid()}"
            cert.private_key_and_cert_chain_pem.write_to_path(tmp)
            os.replace(tmp, self.server_path)

    def server_context(self) -> ssl.SSLContext:
        """A server context with the localhost certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server_path)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the test CA, and verifies host names."""
        return ssl.create_default_context(cafile=self.ca_path)


@functools.cache
def material(folder: str | None = None) -> TLSMaterial:
    """The material in ``folder`` (made there if missing), or in a private temp folder."""
    if folder is None:
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="polyloop-tls-")
        atexit.register(shutil.rmtree, folder, True)
    return TLSMaterial(folder)
