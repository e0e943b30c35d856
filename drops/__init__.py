"""Discovery Drops: the foundation every layer may import (settings, logs, topic admin).

It imports no stage, no shell and no development tool (``make lint`` checks it).
"""
