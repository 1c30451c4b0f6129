"""Async client of the sharded Tarantool feature store: routing, batched writes, reads, aggregation."""

from feature_store.client import FeatureStore
from feature_store.records import Feature, StoredFeature
from feature_store.specs import AggregateSpec, parse_spec, parse_window

__all__ = ["AggregateSpec", "Feature", "FeatureStore", "StoredFeature", "parse_spec", "parse_window"]
