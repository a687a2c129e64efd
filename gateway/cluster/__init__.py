"""Several gateway workers on one machine, one per core, as one gateway (mesh.py)."""

from gateway.cluster.mesh import Cluster, WorkerSpec
from gateway.cluster.remote import RemoteCall, RemoteSession

__all__ = ["Cluster", "RemoteCall", "RemoteSession", "WorkerSpec"]
