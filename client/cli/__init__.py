"""The ``trivault`` command line, one module per job:

* ``common``: consoles (results on stdout, errors on stderr), config discovery, exit codes, hints;
* ``cluster_cmds``: ``certs``, ``up`` / ``status`` / ``down``, ``demo``;
* ``owner_cmds`` (+ ``upload_files``): ``upload``, ``ls``, ``delete``;
* ``query_cmds``: ``search``, ``get``;
* ``acl_cmds``: ``keys``, ``bootstrap``, ``register``, ``grant``, ``revoke``, ``audit``, ``trace``.
"""

from .app import app, main
from .owner_cmds import build_model

__all__ = ["app", "build_model", "main"]
