"""``c2s serve``: a DICOM node that receives series, denoises them with the library pipeline and sends the derived
series on, losing nothing (see :mod:`c2s_cli.serve.node`)."""

from c2s_cli.serve.spool import read_status
from c2s_cli.serve.config import Destination, ServeConfig, build, load_toml
from c2s_cli.serve.node import Node, route

__all__ = ["Destination", "Node", "ServeConfig", "build", "load_toml", "read_status", "route"]
