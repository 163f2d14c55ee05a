"""The context store: records, the memory and Redis back ends, the Redis connection."""
