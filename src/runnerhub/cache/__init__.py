"""A shared cache between RunnerHub nodes (Redis via Sentinel), strictly optional (I7)."""

from runnerhub.cache.redis_cache import (
    Cache,
    CacheStatus,
    CacheUnavailable,
    NullCache,
    RedisTls,
    SharedCache,
)

__all__ = ["Cache", "CacheStatus", "CacheUnavailable", "NullCache", "RedisTls", "SharedCache"]
