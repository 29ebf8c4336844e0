"""portproof plugin: the Redis probe (an example of a third-party probe package)."""

from portproof_redis.probe import RedisProbe

__all__ = ["RedisProbe"]
