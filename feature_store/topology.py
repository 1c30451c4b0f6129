"""Where the storage instances are: replica sets of one master and replicas, laid out from settings."""

from __future__ import annotations

from dataclasses import dataclass

from feature_store.config import StoreSettings


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    name: str
    host: str
    port: int
    rs_id: int
    # Position in the replica set; 0 is the master at bootstrap (a failover may promote another).
    position: int

    @property
    def uri(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ReplicaSetSpec:
    id: int
    instances: tuple[InstanceSpec, ...]

    @property
    def bootstrap_master(self) -> InstanceSpec:
        return self.instances[0]


def replicaset_spec(store: StoreSettings, rs_id: int) -> ReplicaSetSpec:
    instances = tuple(
        InstanceSpec(
            name=f"storage-{rs_id}-{chr(ord('a') + position)}",
            host=store.host,
            port=store.base_port + (rs_id - 1) * store.port_stride + position,
            rs_id=rs_id,
            position=position,
        )
        for position in range(store.instances_per_replicaset)
    )
    return ReplicaSetSpec(id=rs_id, instances=instances)


def topology_from(store: StoreSettings, replicaset_count: int | None = None) -> list[ReplicaSetSpec]:
    count = replicaset_count if replicaset_count is not None else store.replicasets
    return [replicaset_spec(store, rs_id) for rs_id in range(1, count + 1)]
